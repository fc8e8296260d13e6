/**
 * Deployment settings: the only file to edit when pointing the mini program at a gateway.
 *
 * The base URL follows the build's version (develop / trial / release) so a DevTools build talks to
 * `make up` on this machine while trial and release builds talk to the HTTPS domain whitelisted in the
 * admin console (README: 服务器域名). No port, no IP address and no http:// pass that whitelist.
 */
const API_BASE_URLS = {
  develop: 'http://127.0.0.1:8080', // `make up`; DevTools must tick 「不校验合法域名」
  trial: 'https://voicerelay.example.com',
  release: 'https://voicerelay.example.com',
};

function envVersion() {
  try {
    return wx.getAccountInfoSync().miniProgram.envVersion;
  } catch (err) {
    return 'release'; // very old base libraries: assume the strictest setting
  }
}

module.exports = {
  apiBaseUrl: API_BASE_URLS[envVersion()] || API_BASE_URLS.release,
  // 订阅消息 template id from the admin console (README: 订阅消息模板).
  // Empty: never ask, never notify.
  subscribeTemplateId: '',
  // The gateway's TEXT_MAX_CHARS; the server has the last word, this only drives the counter.
  textMaxChars: 200,
  voiceNameMaxChars: 20,
  historyPageSize: 20,
  /**
   * @type {Required<Pick<WechatMiniprogram.RecorderManagerStartOption,
   *   'format' | 'sampleRate' | 'numberOfChannels' | 'encodeBitRate'>> &
   *   {minDurationMs: number, maxDurationMs: number}}
   */
  recording: {
    // AAC at 24 kHz mono: the gateway keeps samples at 24 kHz (the rate CosyVoice3 takes its voice
    // prompt at), so recording any lower throws away the top of the voice. MP3 also works ('mp3').
    format: 'aac',
    sampleRate: 24000,
    numberOfChannels: 1,
    // WeChat refuses to record with a bit rate outside its range for the sample rate: at 24 kHz,
    // 32–128 kbps. 64 kbps is transparent for AAC-LC speech (the gateway's own AAC rate).
    encodeBitRate: 64000,
    minDurationMs: 3000, // the gateway refuses under 3 s of speech
    maxDurationMs: 15000, // guidance says 5–10 s; a little slack so slow readers are not cut off
  },
};
