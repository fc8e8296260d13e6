/**
 * The one error type pages see. `message` is always zh-CN text fit for a toast: the API's own
 * `error.message` when the server sent one, else a fallback chosen by what went wrong.
 */
class ApiError extends Error {
  constructor({ code, message, status = 0, retryAfterS = null }) {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

const NETWORK_MESSAGE = '网络连接失败，请检查网络后重试';
const TIMEOUT_MESSAGE = '网络超时，请稍后重试';
const UNKNOWN_MESSAGE = '出错了，请稍后再试';

// Used only when a response carries no `{"error": {"code", "message"}}` (a proxy's HTML page, say).
const FALLBACK_BY_STATUS = {
  401: '登录已过期，请重新进入小程序',
  404: '内容不存在',
  413: '文件太大了',
  429: '操作太频繁了，请稍后再试',
};

function fallbackMessage(status) {
  if (FALLBACK_BY_STATUS[status]) return FALLBACK_BY_STATUS[status];
  if (status >= 500) return '服务暂时不可用，请稍后再试';
  return `请求失败（${status}），请稍后再试`;
}

/** Seconds from a Retry-After value (delta-seconds or an HTTP date), or null. */
function parseRetryAfter(value) {
  if (value === undefined || value === null || value === '') return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** An ApiError for a non-2xx response; `body` is already parsed JSON when the server sent JSON. */
function errorFromResponse(status, body, retryAfter) {
  const error = body && typeof body === 'object' ? body.error : null;
  const sent = error && typeof error.code === 'string' && typeof error.message === 'string' && error.message;
  return new ApiError({
    code: sent ? error.code : `http_${status}`,
    message: sent ? error.message : fallbackMessage(status),
    status,
    retryAfterS: parseRetryAfter(retryAfter),
  });
}

/** An ApiError for a request that never got a response (wx.request / wx.uploadFile `fail`). */
function networkError(failure) {
  const timedOut = /timeout/i.test((failure && failure.errMsg) || '');
  return new ApiError({
    code: timedOut ? 'timeout' : 'network',
    message: timedOut ? TIMEOUT_MESSAGE : NETWORK_MESSAGE,
  });
}

/** Worth trying again later: the network, a rate limit or the server's own trouble. */
function isTransient(err) {
  if (!(err instanceof ApiError)) return false; // a bug of ours: retrying will not fix it
  return err.status === 0 || err.status === 429 || err.status >= 500;
}

/** What to show for any failure; bugs in our own code get a polite message, not a stack. */
function messageOf(err) {
  return err instanceof ApiError ? err.message : UNKNOWN_MESSAGE;
}

module.exports = { ApiError, errorFromResponse, networkError, isTransient, messageOf, parseRetryAfter };
