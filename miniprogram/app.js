const api = require('./utils/api');

App({
  onLaunch() {
    // Users tap play on purpose: play through the iPhone's silent switch.
    wx.setInnerAudioOption({ obeyMuteSwitch: false });
    // Log in now so the first page's calls find a token. A failure here is not shown: those calls
    // log in again themselves and show the API's message if it still fails.
    api.signIn().catch(() => {});
  },
});
