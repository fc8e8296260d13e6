/**
 * Text in, speech out: pick a voice, type (with a live character counter), optionally pick one style
 * preset and a speed, then submit. The task is followed by the <task-result> component below the form.
 */
const api = require('../../utils/api');
const config = require('../../config');
const { askToNotify } = require('../../utils/subscribe');
const { SubmissionKeys } = require('../../utils/idempotency');
const { messageOf, isTransient } = require('../../utils/errors');
const { countChars } = require('../../utils/format');
const { groupPresets, choosePreset } = require('./presets');

const SPEED_STEPS_PER_UNIT = 10; // the slider moves in tenths: 5 … 20 is 0.5× … 2.0×

Page({
  data: {
    voices: [],
    voiceNames: [],
    voiceIndex: 0,
    voicesLoaded: false,
    text: '',
    charCount: 0,
    maxChars: config.textMaxChars,
    presetGroups: [],
    presetId: '',
    presetName: '',
    speedStep: SPEED_STEPS_PER_UNIT,
    speedText: '1.0',
    showPinyinHelp: false,
    submitting: false,
    cooldownS: 0,
    errorMessage: '',
    taskId: '',
    autoplay: true, // the result plays while it is synthesised (components/task-result)
  },

  // What the page keeps besides its data, made in onLoad (declared here for the type check).
  keys: /** @type {SubmissionKeys | null} */ (null),
  cooldownTimer: /** @type {number | null} */ (null),

  onLoad() {
    this.keys = new SubmissionKeys();
    this.cooldownTimer = null;
    this.loadPresets();
  },

  onShow() {
    this.loadVoices(); // a voice recorded on the other tab may have become ready
  },

  onUnload() {
    this.stopCooldown();
  },

  loadVoices() {
    const selected = this.data.voices[this.data.voiceIndex];
    return api
      .listVoices()
      .then((voices) => {
        const ready = voices.filter((v) => v.status === 'ready');
        const kept = selected ? ready.findIndex((v) => v.voice_id === selected.voice_id) : -1;
        this.setData({
          voices: ready,
          voiceNames: ready.map((v) => v.name),
          voiceIndex: kept === -1 ? 0 : kept,
          voicesLoaded: true,
        });
      })
      .catch((err) => this.showError(messageOf(err)));
  },

  loadPresets() {
    return api
      .listPresets()
      .then((presets) => this.setData({ presetGroups: groupPresets(presets) }))
      .catch((err) => this.showError(messageOf(err)));
  },

  onVoiceChange(e) {
    this.setData({ voiceIndex: Number(e.detail.value) });
  },

  onTextInput(e) {
    const text = e.detail.value;
    this.setData({ text, charCount: countChars(text) });
  },

  onPresetChange(e) {
    const { kind } = e.currentTarget.dataset;
    const { groups, preset } = choosePreset(this.data.presetGroups, kind, Number(e.detail.value));
    this.setData({ presetGroups: groups, presetId: preset.id, presetName: preset.name });
  },

  clearPreset() {
    const { groups } = choosePreset(this.data.presetGroups, '', 0);
    this.setData({ presetGroups: groups, presetId: '', presetName: '' });
  },

  onSpeedChange(e) {
    const speedStep = Number(e.detail.value);
    this.setData({ speedStep, speedText: (speedStep / SPEED_STEPS_PER_UNIT).toFixed(1) });
  },

  togglePinyinHelp() {
    this.setData({ showPinyinHelp: !this.data.showPinyinHelp });
  },

  goRecord() {
    wx.switchTab({ url: '/pages/record/record' });
  },

  /** What stops a submission before it reaches the server, as a message; '' when nothing does. */
  problem() {
    const { voices, charCount, maxChars } = this.data;
    if (!voices.length) return '请先录制一段声音，审核通过后即可使用';
    if (charCount === 0) return '请输入要合成的文字';
    if (charCount > maxChars) return `文字太长了，最多 ${maxChars} 字，请删减 ${charCount - maxChars} 字`;
    return '';
  },

  buildRequest() {
    const { voices, voiceIndex, text, presetId, speedStep } = this.data;
    const request = {
      text,
      voice_id: voices[voiceIndex].voice_id,
      mode: presetId ? 'instruct' : 'zero_shot',
      format: 'mp3',
      speed: speedStep / SPEED_STEPS_PER_UNIT,
    };
    if (presetId) request.instruct = presetId;
    return request;
  },

  submit() {
    const problem = this.problem();
    if (problem) {
      this.showError(problem);
      return Promise.resolve();
    }
    const request = this.buildRequest();
    this.setData({ submitting: true, errorMessage: '' });
    // Ask first, before any await: WeChat shows the subscription prompt only straight from a tap.
    return askToNotify(config.subscribeTemplateId).then((notify) => this.send({ ...request, notify }));
  },

  async send(request) {
    try {
      const task = await api.createSynthesis(request, { idempotencyKey: this.keys.keyFor(request) });
      this.keys.settle();
      this.setData({ taskId: task.task_id });
    } catch (err) {
      // After a transient failure the same request keeps its key: tapping again cannot synthesise twice.
      if (!isTransient(err)) this.keys.settle();
      this.showError(messageOf(err));
      if (err.retryAfterS) this.startCooldown(err.retryAfterS);
    } finally {
      this.setData({ submitting: false });
    }
  },

  showError(message) {
    this.setData({ errorMessage: message });
    wx.showToast({ title: message, icon: 'none', duration: 3000 });
  },

  /** Keep the button disabled for as long as the server's Retry-After says. */
  startCooldown(seconds) {
    this.stopCooldown();
    this.setData({ cooldownS: seconds });
    this.cooldownTimer = setInterval(() => {
      const cooldownS = this.data.cooldownS - 1;
      this.setData({ cooldownS });
      if (cooldownS <= 0) this.stopCooldown();
    }, 1000);
  },

  stopCooldown() {
    if (this.cooldownTimer !== null) clearInterval(this.cooldownTimer);
    this.cooldownTimer = null;
  },
});
