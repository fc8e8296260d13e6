/** The user's syntheses, newest first: play a finished one in place, or open it for A/B listening. */
const api = require('../../utils/api');
const config = require('../../config');
const { Player } = require('../../utils/player');
const { messageOf } = require('../../utils/errors');
const { taskStatusText, shortTime } = require('../../utils/format');

function forList(task) {
  return { ...task, statusText: taskStatusText(task.status), updatedText: shortTime(task.updated_at) };
}

Page({
  data: {
    tasks: [],
    loaded: false,
    playing: '', // task_id of the clip playing, or ''
    errorMessage: '',
  },

  onLoad() {
    this.player = new Player((playing, errorMessage) => {
      this.setData({ playing });
      if (errorMessage) this.showError(errorMessage);
    });
  },

  onShow() {
    this.load();
  },

  onHide() {
    this.player.stop();
  },

  onUnload() {
    this.player.destroy();
  },

  onPullDownRefresh() {
    return this.load().then(() => wx.stopPullDownRefresh());
  },

  load() {
    return api
      .listSyntheses({ limit: config.historyPageSize })
      .then((tasks) => this.setData({ tasks: tasks.map(forList), loaded: true, errorMessage: '' }))
      .catch((err) => this.showError(messageOf(err)));
  },

  play(e) {
    const task = this.data.tasks.find((t) => t.task_id === e.currentTarget.dataset.id);
    if (task && task.audio_url) this.player.toggle(task.task_id, task.audio_url);
  },

  open(e) {
    wx.navigateTo({ url: `/pages/task/task?id=${encodeURIComponent(e.currentTarget.dataset.id)}` });
  },

  goSynthesize() {
    wx.switchTab({ url: '/pages/synthesize/synthesize' });
  },

  showError(message) {
    this.setData({ errorMessage: message });
    wx.showToast({ title: message, icon: 'none', duration: 3000 });
  },
});
