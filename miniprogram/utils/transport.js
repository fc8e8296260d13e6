/**
 * wx.request and wx.uploadFile as promises of `{status, body, headers}`. Only utils/api.js uses this
 * module: pages call the API through api.js, which adds the session, retries and error handling.
 */
const { networkError } = require('./errors');

const TIMEOUT_MS = 15000;
const UPLOAD_TIMEOUT_MS = 60000; // a 5 MB sample on a weak mobile link

function request({ url, method, data, header }) {
  return new Promise((resolve, reject) => {
    wx.request({
      url,
      method,
      data,
      header,
      timeout: TIMEOUT_MS,
      success: (res) => resolve({ status: res.statusCode, body: res.data, headers: res.header || {} }),
      fail: (failure) => reject(networkError(failure)),
    });
  });
}

function uploadFile({ url, filePath, name, formData, header }) {
  return new Promise((resolve, reject) => {
    wx.uploadFile({
      url,
      filePath,
      name,
      formData,
      header,
      timeout: UPLOAD_TIMEOUT_MS,
      // uploadFile hands back the body as a string, JSON or not.
      success: (res) =>
        resolve({ status: res.statusCode, body: parseJson(res.data), headers: res.header || {} }),
      fail: (failure) => reject(networkError(failure)),
    });
  });
}

function parseJson(text) {
  if (typeof text !== 'string') return text;
  try {
    return JSON.parse(text);
  } catch (err) {
    return null; // not JSON (a proxy's error page): the caller falls back to a status message
  }
}

/** A response header by name, whatever case the server or the base library used. */
function headerValue(headers, name) {
  const wanted = name.toLowerCase();
  const key = Object.keys(headers || {}).find((k) => k.toLowerCase() === wanted);
  return key === undefined ? null : headers[key];
}

module.exports = { request, uploadFile, headerValue };
