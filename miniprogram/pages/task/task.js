/**
 * One task, opened from the history list or from the "synthesis finished" subscription message,
 * whose `page` is `pages/task/task?id=<task_id>` (wechat_adapter/subscribe_message.py).
 */
Page({
  data: {
    taskId: '',
    text: '',
  },

  onLoad(query) {
    this.setData({ taskId: decodeURIComponent(query.id || '') });
  },

  onStatusChange(e) {
    this.setData({ text: e.detail.task.text });
  },

  synthesizeAnother() {
    wx.switchTab({ url: '/pages/synthesize/synthesize' });
  },
});
