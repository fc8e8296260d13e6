/**
 * One synthesis task followed to its end: status stages while it runs (polling with backoff), then
 * playback and A/B listening (A: the voice sample, B: the result). Used by the synthesis page right
 * after submitting and by the task page that history and the subscription message open.
 */
const api = require('../../utils/api');
const { poll } = require('../../utils/poll');
const { Player } = require('../../utils/player');
const { messageOf } = require('../../utils/errors');
const { taskStatusText, isFinalTask, taskStage } = require('../../utils/format');

Component({
  // The shared classes of app.wxss (card, tag, hint, aigc-label …) apply inside this component too.
  options: { styleIsolation: 'apply-shared' },

  properties: {
    taskId: { type: String, value: '' },
  },

  data: {
    task: null,
    statusText: '',
    stage: 0,
    sampleUrl: '',
    playing: '', // '' | 'sample' | 'result'
    errorMessage: '',
    canRetry: false,
  },

  observers: {
    taskId(taskId) {
      this.follow(taskId);
    },
  },

  lifetimes: {
    attached() {
      this.player = new Player((playing, errorMessage) => this.setData({ playing, errorMessage }));
      // Base libraries differ on whether an initial property value fires its observer: make sure.
      if (this.data.taskId && !this.poller) this.follow(this.data.taskId);
    },
    detached() {
      this.stopFollowing();
      this.player.destroy();
    },
  },

  pageLifetimes: {
    hide() {
      this.player.stop(); // no audio from a page the user has left
    },
  },

  methods: {
    follow(taskId) {
      this.stopFollowing();
      this.setData({ task: null, sampleUrl: '', errorMessage: '', canRetry: false });
      if (!taskId) return;
      this.poller = poll({
        fetch: () => api.getSynthesis(taskId),
        isFinal: isFinalTask,
        onUpdate: (task) => this.show(task),
        onError: (err, { gaveUp }) => this.setData({ errorMessage: messageOf(err), canRetry: gaveUp }),
      });
    },

    stopFollowing() {
      if (this.poller) this.poller.stop();
      this.poller = null;
    },

    show(task) {
      const first = !this.data.task;
      this.setData({
        task,
        statusText: taskStatusText(task.status),
        stage: taskStage(task.status),
        errorMessage: '',
      });
      if (first) this.loadSample(task.voice_id);
      this.triggerEvent('statuschange', { task });
    },

    /** The voice's signed sample link, for side A; a deleted voice just means no A/B. */
    loadSample(voiceId) {
      api
        .getVoice(voiceId)
        .then((voice) => this.setData({ sampleUrl: voice.audio_url || '' }))
        .catch(() => this.setData({ sampleUrl: '' }));
    },

    playResult() {
      this.player.toggle('result', this.data.task.audio_url);
    },

    playSample() {
      this.player.toggle('sample', this.data.sampleUrl);
    },

    retry() {
      this.follow(this.data.taskId);
    },
  },
});
