/** Asking before what cannot be undone: signing out, deleting a voice, erasing the account. */

const DESTRUCTIVE_COLOR = '#d93025';

/**
 * wx.showModal with a red confirm button. Resolves true when the user confirmed, false when they
 * cancelled or the modal could not be shown (nothing is done then).
 */
function confirmDestructive({ title, content, confirmText }) {
  return new Promise((resolve) => {
    wx.showModal({
      title,
      content,
      confirmText,
      confirmColor: DESTRUCTIVE_COLOR,
      success: (res) => resolve(res.confirm),
      fail: () => resolve(false),
    });
  });
}

module.exports = { confirmDestructive };
