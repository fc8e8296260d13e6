/**
 * Recording a voice: ask whose voice it is and confirm their consent (utils/consent.js), show a
 * sentence (first one that states the speaker's consent), record it being read (5–10 s), listen
 * back, upload. The sentence is sent as `prompt_text`, the choice as `consent`; upload is blocked
 * until a choice is made, and each upload asks again. WeChat then reviews the audio; the list below shows each voice
 * and follows the ones still under review (reviews.js) until they are usable or refused.
 */
const api = require('../../utils/api');
const config = require('../../config');
const { Player } = require('../../utils/player');
const { messageOf } = require('../../utils/errors');
const { confirmDestructive } = require('../../utils/confirm');
const { voiceStatusText, shortTime } = require('../../utils/format');
const { nextSentence, FIRST_SENTENCE } = require('../../utils/sentences');
const { CONSENT_PROMPT, CONSENT_OPTIONS, CONSENT_MISSING } = require('../../utils/consent');
const { createRecorder } = require('./recorder');
const { Reviews } = require('./reviews');

function forList(voice) {
  return {
    ...voice,
    statusText: voiceStatusText(voice.status),
    durationText: `${voice.duration_s.toFixed(1)} 秒`,
    createdText: shortTime(voice.created_at),
  };
}

Page({
  data: {
    sentence: '',
    phase: 'idle', // idle | recording | recorded | uploading
    elapsedS: 0,
    maxDurationS: config.recording.maxDurationMs / 1000,
    recording: null, // {filePath, durationText}
    name: '',
    consent: '', // '' until the user picks one of CONSENT_OPTIONS
    consentPrompt: CONSENT_PROMPT,
    consentOptions: CONSENT_OPTIONS,
    nameMaxChars: config.voiceNameMaxChars,
    voices: [],
    playing: '', // '' | 'preview' | a voice_id
    errorMessage: '',
  },

  // What the page keeps besides its data, made in onLoad (declared here for the type check).
  reviews: /** @type {Reviews | null} */ (null),
  elapsedTimer: /** @type {number | null} */ (null),
  player: /** @type {Player | null} */ (null),
  recorder: /** @type {ReturnType<typeof createRecorder> | null} */ (null),

  onLoad() {
    this.reviews = new Reviews({
      onUpdate: (voice) => this.reviewed(voice),
      onGiveUp: (err) => this.showError(messageOf(err)),
    });
    this.elapsedTimer = null;
    this.player = new Player((playing, errorMessage) => {
      this.setData({ playing });
      if (errorMessage) this.showError(errorMessage);
    });
    this.recorder = createRecorder({
      onStart: () => this.recordingStarted(),
      onDone: (recording) => this.recordingDone(recording),
      onTooShort: () => this.recordingRefused('录音太短了，请完整读完上面的句子（至少 3 秒）'),
      onDenied: () => this.askForMicrophone(),
      onFailed: () => this.recordingRefused('录音失败，请稍后重试'),
    });
    this.setData({ sentence: FIRST_SENTENCE });
  },

  onShow() {
    this.loadVoices();
  },

  onHide() {
    this.leave();
  },

  onUnload() {
    this.leave();
    this.player.destroy();
  },

  leave() {
    if (this.data.phase === 'recording') this.recorder.stop();
    this.player.stop();
    this.reviews.stopAll();
  },

  loadVoices() {
    return api
      .listVoices()
      .then((voices) => {
        this.setData({ voices: voices.map(forList) });
        const pending = voices.filter((v) => v.status === 'pending_review');
        pending.forEach((v) => this.reviews.follow(v.voice_id));
      })
      .catch((err) => this.showError(messageOf(err)));
  },

  changeSentence() {
    // A recording belongs to the sentence it read: a new sentence means recording again.
    this.setData({ sentence: nextSentence(this.data.sentence), phase: 'idle', recording: null });
  },

  startRecording() {
    this.player.stop();
    this.setData({ errorMessage: '' });
    this.recorder.start();
  },

  stopRecording() {
    this.recorder.stop();
  },

  recordingStarted() {
    this.setData({ phase: 'recording', elapsedS: 0, recording: null });
    this.elapsedTimer = setInterval(() => this.setData({ elapsedS: this.data.elapsedS + 1 }), 1000);
  },

  recordingDone({ filePath, durationMs }) {
    this.stopElapsed();
    const durationText = (durationMs / 1000).toFixed(1);
    this.setData({ phase: 'recorded', recording: { filePath, durationText } });
  },

  recordingRefused(message) {
    this.stopElapsed();
    this.setData({ phase: 'idle', recording: null });
    this.showError(message);
  },

  stopElapsed() {
    if (this.elapsedTimer !== null) clearInterval(this.elapsedTimer);
    this.elapsedTimer = null;
  },

  askForMicrophone() {
    this.recordingRefused('没有麦克风权限，无法录音');
    wx.showModal({
      title: '需要使用麦克风',
      content: '录制你的声音需要麦克风权限，请在设置中打开。',
      confirmText: '去设置',
      success: (res) => {
        if (res.confirm) wx.openSetting();
      },
    });
  },

  playRecording() {
    this.player.toggle('preview', this.data.recording.filePath);
  },

  discardRecording() {
    this.player.stop();
    this.setData({ phase: 'idle', recording: null });
  },

  onNameInput(e) {
    this.setData({ name: e.detail.value });
  },

  onConsentChange(e) {
    const { value } = e.detail;
    this.setData({ consent: CONSENT_OPTIONS.some((o) => o.value === value) ? value : '' });
  },

  async upload() {
    const { recording, sentence, name, consent } = this.data;
    if (!consent) {
      this.showError(CONSENT_MISSING);
      return;
    }
    this.player.stop();
    this.setData({ phase: 'uploading', errorMessage: '' });
    try {
      const voice = await api.uploadVoice({
        filePath: recording.filePath,
        promptText: sentence, // what was read aloud: the transcript the engine aligns with
        name: name.trim(),
        consent,
      });
      this.setData({
        phase: 'idle',
        recording: null,
        name: '',
        consent: '', // the next voice may be someone else's: ask again
        sentence: nextSentence(sentence),
        voices: [forList(voice), ...this.data.voices],
      });
      wx.showToast({ title: '已上传，审核中', icon: 'success' });
      this.reviews.follow(voice.voice_id);
    } catch (err) {
      this.setData({ phase: 'recorded' }); // keep the recording: the user may just retry
      this.showError(messageOf(err));
    }
  },

  reviewed(voice) {
    const voices = this.data.voices.map((v) => (v.voice_id === voice.voice_id ? forList(voice) : v));
    this.setData({ voices });
    if (voice.status === 'pending_review') return;
    if (voice.status === 'ready') {
      wx.showToast({ title: '审核通过，可以合成了', icon: 'none' });
    } else {
      this.showError('这段声音未通过审核，请换一段录音');
    }
  },

  playVoice(e) {
    const voice = this.data.voices.find((v) => v.voice_id === e.currentTarget.dataset.id);
    if (voice) this.player.toggle(voice.voice_id, voice.audio_url);
  },

  deleteVoice(e) {
    const voiceId = e.currentTarget.dataset.id;
    return confirmDestructive({
      title: '删除这段声音？',
      content: '录音和由它提取的声音特征会被彻底删除，无法恢复。',
      confirmText: '删除',
    }).then((confirmed) => (confirmed ? this.removeVoice(voiceId) : null));
  },

  async removeVoice(voiceId) {
    try {
      await api.deleteVoice(voiceId);
      if (this.data.playing === voiceId) this.player.stop();
      this.reviews.stop(voiceId);
      this.setData({ voices: this.data.voices.filter((v) => v.voice_id !== voiceId) });
      wx.showToast({ title: '已删除', icon: 'success' });
    } catch (err) {
      this.showError(messageOf(err));
    }
  },

  showError(message) {
    this.setData({ errorMessage: message });
    wx.showToast({ title: message, icon: 'none', duration: 3000 });
  },
});
