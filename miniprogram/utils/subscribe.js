/**
 * Asking for one "synthesis finished" subscription message. WeChat only shows the prompt when this
 * runs inside a tap handler, before anything awaits, so pages call it first thing on tap.
 */

/** Resolves to true only if the user accepted the template; never rejects. */
function askToNotify(templateId) {
  return new Promise((resolve) => {
    if (!templateId) {
      resolve(false); // no template configured: submit without notification
      return;
    }
    wx.requestSubscribeMessage({
      tmplIds: [templateId],
      success: (res) => resolve(res[templateId] === 'accept'),
      // Refusals, a switched-off main setting (20004) or a bad template id: submit anyway, just
      // without the message; the page still shows the result when it is done.
      fail: () => resolve(false),
    });
  });
}

module.exports = { askToNotify };
