/**
 * The bearer token: wx.login's code traded for it once, kept in storage until shortly before it
 * expires. The trade itself is an API call, so api.js passes it in (`exchange`); this module never
 * talks to the server on its own.
 */
const STORAGE_KEY = 'voicerelay.session';
// Renew a little early so a token never expires between being read and reaching the server.
const EXPIRY_MARGIN_MS = 60 * 1000;

const { ApiError } = require('./errors');

let pendingLogin = null; // one wx.login at a time, however many calls need a token at once

function loginFailed() {
  return new ApiError({ code: 'login_failed', message: '微信登录失败，请稍后重试' });
}

function wxLogin() {
  return new Promise((resolve, reject) => {
    wx.login({
      success: (res) => (res.code ? resolve(res.code) : reject(loginFailed())),
      fail: () => reject(loginFailed()),
    });
  });
}

function stored() {
  const session = wx.getStorageSync(STORAGE_KEY);
  return session && session.token && session.expiresAt - EXPIRY_MARGIN_MS > Date.now() ? session : null;
}

/**
 * A valid token, logging in when there is none. `exchange(code)` resolves to the body of
 * POST /v1/session: `{token, expires_in, openid}`.
 */
function token(exchange) {
  const session = stored();
  if (session) return Promise.resolve(session.token);
  if (!pendingLogin) {
    pendingLogin = wxLogin()
      .then(exchange)
      .then((body) => {
        wx.setStorageSync(STORAGE_KEY, {
          token: body.token,
          openid: body.openid,
          expiresAt: Date.now() + body.expires_in * 1000,
        });
        return body.token;
      })
      .finally(() => {
        pendingLogin = null;
      });
  }
  return pendingLogin;
}

/**
 * The stored token if the server may still accept it, else null; never logs in. A login already in
 * flight is waited for first, so the token it brings cannot be stored after a sign-out cleared.
 */
function current() {
  const inFlight = pendingLogin ? pendingLogin.catch(() => null) : Promise.resolve();
  return inFlight.then(() => {
    const session = wx.getStorageSync(STORAGE_KEY);
    return session && session.token && session.expiresAt > Date.now() ? session.token : null;
  });
}

/** Forget the token, e.g. after the server answered 401 to it, or on sign-out. */
function clear() {
  wx.removeStorageSync(STORAGE_KEY);
}

module.exports = { token, current, clear, STORAGE_KEY };
