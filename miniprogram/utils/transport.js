/**
 * wx.request and wx.uploadFile as promises of `{status, body, headers}`, and a chunked wx.request
 * whose body arrives piece by piece. Only utils/api.js uses this module: pages call the API through
 * api.js, which adds the session, retries and error handling.
 */
const { networkError } = require('./errors');

const TIMEOUT_MS = 15000;
const UPLOAD_TIMEOUT_MS = 60000; // a 5 MB sample on a weak mobile link
// A chunked response lasts as long as what it carries (an audio stream: the queue, then the
// synthesis); the gateway ends any stream after 10 minutes itself.
const CHUNKED_TIMEOUT_MS = 600000;

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
      // uploadFile hands back the body as a string, JSON or not. Its `header` is real but missing
      // from the official typings.
      success: (res) =>
        resolve({
          status: res.statusCode,
          body: parseJson(res.data),
          headers: /** @type {{header?: Record<string, string>}} */ (res).header || {},
        }),
      fail: (failure) => reject(networkError(failure)),
    });
  });
}

/**
 * A GET whose body is read as it arrives (wx.request `enableChunked`, base library 2.20.1+; check
 * `wx.canIUse('request.object.enableChunked')` first). `onHeaders({status, headers})` comes first
 * (`status` may be undefined: DevTools leaves it out), then `onChunk(ArrayBuffer)` for each piece,
 * then exactly one of `onDone({status})` or `onFail(ApiError)`. Returns `{abort()}`; after abort
 * nothing more is reported.
 *
 * @param {{url: string, header?: Record<string, string>,
 *   onHeaders: (res: {status: number | undefined, headers: Record<string, string>}) => void,
 *   onChunk: (data: ArrayBuffer) => void,
 *   onDone: (res: {status: number}) => void,
 *   onFail: (err: Error) => void}} options
 * @returns {{abort: () => void}}
 */
function requestChunked({ url, header, onHeaders, onChunk, onDone, onFail }) {
  let over = false;
  const finish = (report) => {
    if (over) return;
    over = true;
    report();
  };
  const task = wx.request({
    url,
    method: 'GET',
    header: header || {},
    enableChunked: true,
    responseType: 'arraybuffer',
    timeout: CHUNKED_TIMEOUT_MS,
    success: (res) => finish(() => onDone({ status: res.statusCode })),
    fail: (failure) => finish(() => onFail(networkError(failure))),
  });
  task.onHeadersReceived((res) => {
    if (!over) onHeaders({ status: res.statusCode, headers: res.header || {} });
  });
  task.onChunkReceived((res) => {
    if (!over) onChunk(res.data);
  });
  return {
    abort() {
      if (over) return;
      over = true;
      task.abort();
    },
  };
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

module.exports = { request, uploadFile, requestChunked, headerValue };
