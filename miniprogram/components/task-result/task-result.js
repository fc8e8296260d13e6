/**
 * One synthesis task followed to its end: status stages while it runs (polling with backoff), then
 * playback and A/B listening (A: the voice sample, B: the result). Used by the synthesis page right
 * after submitting, with `autoplay`, and by the task page that history and the subscription message
 * open.
 *
 * `autoplay`: the audio plays while it is synthesised, from the task's PCM stream
 * (utils/stream_player.js). Where the base library cannot stream, the stream fails, or it ends short
 * of the finished task's `duration_s` (a worker died mid-task after some audio was played), the
 * finished file (`audio_url`) plays once the task has succeeded, as the B button plays it. A tap on
 * any play or stop button, or leaving the page, ends autoplay.
 */
const api = require('../../utils/api');
const { poll } = require('../../utils/poll');
const { Player } = require('../../utils/player');
const { StreamPlayer, streamingSupported } = require('../../utils/stream_player');
const { messageOf } = require('../../utils/errors');
const { taskStatusText, isFinalTask, taskStage } = require('../../utils/format');

// A stream this much shorter than the finished file was cut short. Both hold the same samples (the
// stored duration is rounded to milliseconds), so only a lost piece, a sentence or the label, is more.
const CUT_SHORT_TOLERANCE_S = 0.25;

/**
 * Where autoplay stands. `stream`: 'none' (no stream: the file plays when the task succeeds),
 * 'playing', 'ended' (`receivedS` of audio came and was played) or 'failed'.
 * @typedef {{stream: 'none' | 'playing' | 'ended' | 'failed', receivedS: number}} Autoplay
 */

/**
 * The component's data and properties, and what an instance keeps besides (the typings cannot infer
 * either from Component()'s options in a JS file).
 * @typedef {object} Data
 * @property {string} taskId
 * @property {boolean} autoplay
 * @property {any} task the task as the API gave it, null until the first answer
 * @property {string} statusText
 * @property {number} stage
 * @property {string} sampleUrl
 * @property {string} playing
 * @property {string} errorMessage
 * @property {boolean} canRetry
 * @typedef {object} Fields
 * @property {Data} data
 * @property {Player} player
 * @property {StreamPlayer} stream
 * @property {{stop: () => void} | null} poller
 * @property {Autoplay | null} autoplay
 * @typedef {WechatMiniprogram.Component.TrivialInstance & Fields} TaskResult
 */

Component({
  // The shared classes of app.wxss (card, tag, hint, aigc-label …) apply inside this component too.
  options: { styleIsolation: 'apply-shared' },

  properties: {
    taskId: { type: String, value: '' },
    autoplay: { type: Boolean, value: false },
  },

  data: {
    task: null,
    statusText: '',
    stage: 0,
    sampleUrl: '',
    playing: '', // '' | 'stream' | 'sample' | 'result'
    errorMessage: '',
    canRetry: false,
  },

  observers: {
    /** @this {TaskResult} */
    taskId(taskId) {
      this.follow(taskId);
    },
  },

  lifetimes: {
    /** @this {TaskResult} */
    created() {
      this.poller = null;
      this.autoplay = null;
      this.player = new Player((playing, errorMessage) => {
        const patch = { errorMessage };
        // The clip player going idle says nothing about a stream playing meanwhile.
        if (playing || this.data.playing !== 'stream') patch.playing = playing;
        this.setData(patch);
      });
      this.stream = new StreamPlayer({
        onStarted: () => this.setData({ playing: 'stream', errorMessage: '' }),
        onEnded: ({ receivedS }) => this.streamSettled('ended', receivedS),
        onFailed: () => this.streamSettled('failed', 0),
      });
    },
    /** @this {TaskResult} */
    attached() {
      // Base libraries differ on whether an initial property value fires its observer: make sure.
      if (this.data.taskId && !this.poller) this.follow(this.data.taskId);
    },
    /** @this {TaskResult} */
    detached() {
      this.stopFollowing();
      this.autoplay = null;
      this.stream.destroy();
      this.player.destroy();
    },
  },

  pageLifetimes: {
    /** @this {TaskResult} */
    hide() {
      // No audio from a page the user has left, and none when they come back.
      this.player.stop();
      this.stopStream();
    },
  },

  methods: {
    /**
     * @this {TaskResult}
     * @param {string} taskId
     */
    follow(taskId) {
      this.stopFollowing();
      this.stopStream();
      this.setData({ task: null, sampleUrl: '', errorMessage: '', canRetry: false });
      if (!taskId) return;
      this.poller = poll({
        fetch: () => api.getSynthesis(taskId),
        isFinal: isFinalTask,
        onUpdate: (task) => this.show(task),
        onError: (err, { gaveUp }) => this.setData({ errorMessage: messageOf(err), canRetry: gaveUp }),
      });
    },

    /** @this {TaskResult} */
    stopFollowing() {
      if (this.poller) this.poller.stop();
      this.poller = null;
    },

    /** @this {TaskResult} */
    show(task) {
      const first = !this.data.task;
      this.setData({
        task,
        statusText: taskStatusText(task.status),
        stage: taskStage(task.status),
        errorMessage: '',
      });
      if (first) {
        this.loadSample(task.voice_id);
        if (this.data.autoplay) this.beginAutoplay(task);
      }
      this.continueAutoplay();
      this.triggerEvent('statuschange', { task });
    },

    /**
     * The voice's signed sample link, for side A; a deleted voice just means no A/B.
     * @this {TaskResult}
     */
    loadSample(voiceId) {
      api
        .getVoice(voiceId)
        .then((voice) => this.setData({ sampleUrl: voice.audio_url || '' }))
        .catch(() => this.setData({ sampleUrl: '' }));
    },

    /**
     * Stream a task still being synthesised; a finished one plays from its file (continueAutoplay).
     * @this {TaskResult}
     */
    beginAutoplay(task) {
      if (isFinalTask(task) && task.status !== 'succeeded') return; // nothing to hear
      this.player.stop();
      const canStream = !isFinalTask(task) && Boolean(task.stream_url) && streamingSupported();
      this.autoplay = { stream: canStream ? 'playing' : 'none', receivedS: 0 };
      if (canStream) this.stream.start(task);
    },

    /**
     * @this {TaskResult}
     * @param {'ended' | 'failed'} outcome
     * @param {number} receivedS
     */
    streamSettled(outcome, receivedS) {
      if (this.data.playing === 'stream') this.setData({ playing: '' });
      if (!this.autoplay) return;
      this.autoplay = { stream: outcome, receivedS };
      this.continueAutoplay();
    },

    /**
     * Once the stream is over and the task is final: play the file if the stream did not bring it all.
     * @this {TaskResult}
     */
    continueAutoplay() {
      const { autoplay } = this;
      const { task } = this.data;
      if (!autoplay || autoplay.stream === 'playing' || !task || !isFinalTask(task)) return;
      this.autoplay = null;
      if (task.status !== 'succeeded') return;
      const whole =
        autoplay.stream === 'ended' && autoplay.receivedS >= task.duration_s - CUT_SHORT_TOLERANCE_S;
      if (!whole) this.player.play('result', task.audio_url);
    },

    /**
     * The stop button while the stream plays; also how any other playback takes over.
     * @this {TaskResult}
     */
    stopStream() {
      this.autoplay = null;
      this.stream.stop();
      if (this.data.playing === 'stream') this.setData({ playing: '' });
    },

    /** @this {TaskResult} */
    playResult() {
      this.stopStream();
      this.player.toggle('result', this.data.task.audio_url);
    },

    /** @this {TaskResult} */
    playSample() {
      this.stopStream();
      this.player.toggle('sample', this.data.sampleUrl);
    },

    /** @this {TaskResult} */
    retry() {
      this.follow(this.data.taskId);
    },
  },
});
