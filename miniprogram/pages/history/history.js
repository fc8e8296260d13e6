/**
 * The user's syntheses, newest first: play a finished one in place, or open it for A/B listening.
 * Signing out (退出登录) also lives here: it revokes this phone's token and empties the list; and so
 * does erasing the account (删除我的全部数据), which deletes everything of the user on the server.
 */
const api = require('../../utils/api');
const config = require('../../config');
const { Player } = require('../../utils/player');
const { messageOf } = require('../../utils/errors');
const { confirmDestructive } = require('../../utils/confirm');
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
    signingOut: false,
    signedOut: false, // until the next load, which logs in again
    erasing: false,
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
      .then((tasks) =>
        this.setData({ tasks: tasks.map(forList), loaded: true, signedOut: false, errorMessage: '' })
      )
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

  signOut() {
    return confirmDestructive({
      title: '退出登录？',
      content: '这台手机上的登录会失效，声音和合成记录都会保留。再次使用时会用当前微信重新登录。',
      confirmText: '退出',
    }).then((confirmed) => (confirmed ? this.signOutNow() : null));
  },

  async signOutNow() {
    this.player.stop();
    this.setData({ signingOut: true });
    await api.signOut(); // never rejects: the phone forgets the token whatever the server said
    this.setData({
      tasks: [],
      loaded: false,
      playing: '',
      errorMessage: '',
      signingOut: false,
      signedOut: true,
    });
    wx.showToast({ title: '已退出登录', icon: 'success' });
  },

  eraseAccount() {
    return confirmDestructive({
      title: '删除全部数据',
      content: '将永久删除你上传的所有声音样本、合成记录和音频，且无法恢复。确定删除吗？',
      confirmText: '删除',
    }).then((confirmed) => (confirmed ? this.eraseAccountNow() : null));
  },

  async eraseAccountNow() {
    this.player.stop();
    this.setData({ erasing: true });
    wx.showLoading({ title: '正在删除…', mask: true }); // a few seconds; no other tap meanwhile
    try {
      await api.eraseAccount();
    } catch (err) {
      wx.hideLoading();
      this.setData({ erasing: false });
      this.showError(messageOf(err));
      return;
    }
    wx.hideLoading();
    // reLaunch closes every page, with their lists, players and polls, and opens the first tab
    // afresh, which logs in to the now empty account. The toast comes after the navigation, which
    // would otherwise close it.
    wx.reLaunch({
      url: '/pages/synthesize/synthesize',
      success: () => wx.showToast({ title: '已删除', icon: 'success' }),
    });
  },

  signInAgain() {
    return this.load();
  },

  showError(message) {
    this.setData({ errorMessage: message });
    wx.showToast({ title: message, icon: 'none', duration: 3000 });
  },
});
