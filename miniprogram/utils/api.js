/**
 * The VoiceRelay HTTP API (the gateway's /openapi.json): every call the mini program makes goes
 * through this module. It adds the bearer token, logs in again once on 401, waits out a short
 * Retry-After once where repeating is safe, and turns every failure into an ApiError whose `message`
 * is the server's own (see utils/errors.js).
 */
const config = require('../config');
const session = require('./session');
const transport = require('./transport');
const { errorFromResponse } = require('./errors');

const SAMPLE_RATE_HEADER = 'X-Audio-Sample-Rate';

// A Retry-After this short is waited out silently; a longer one is the user's to wait (the page
// shows a countdown), since nobody should stare at a spinner for a minute.
const AUTO_RETRY_MAX_WAIT_S = 3;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function send(op, header) {
  const url = config.apiBaseUrl + op.path;
  if (op.upload) {
    return transport.uploadFile({ url, header, ...op.upload });
  }
  if (op.body !== undefined) {
    header['Content-Type'] = 'application/json';
  }
  return transport.request({ url, method: op.method, data: op.body, header });
}

/**
 * One API operation. `op`: {method, path, body?, upload?, headers?, public?, token?, repeatable?},
 * where `repeatable` says sending it twice does no harm (a GET, or a POST carrying an
 * Idempotency-Key), and `token` sends that token instead of the session's: such a call is about that
 * very token, so a 401 is its answer, never a reason to log in again.
 */
async function call(op) {
  let loggedInAgain = false;
  let waitedOut = false;
  for (;;) {
    const header = { ...(op.headers || {}) };
    if (!op.public) {
      header.Authorization = `Bearer ${op.token || (await session.token(exchangeCode))}`;
    }
    const res = await send(op, header);
    if (res.status >= 200 && res.status < 300) {
      return res.body;
    }
    const err = errorFromResponse(res.status, res.body, transport.headerValue(res.headers, 'Retry-After'));
    if (res.status === 401 && !op.public && !op.token && !loggedInAgain) {
      // The token expired or the server's secret rotated: one fresh wx.login, then give up.
      loggedInAgain = true;
      session.clear();
      continue;
    }
    const canWait = err.retryAfterS !== null && err.retryAfterS <= AUTO_RETRY_MAX_WAIT_S;
    if ((res.status === 429 || res.status === 503) && op.repeatable && canWait && !waitedOut) {
      waitedOut = true;
      await sleep(err.retryAfterS * 1000);
      continue;
    }
    throw err;
  }
}

function pathId(id) {
  return encodeURIComponent(id);
}

/** POST /v1/session: a wx.login code for `{token, expires_in, openid}`; session.js calls it. */
function exchangeCode(code) {
  return call({ method: 'POST', path: '/v1/session', body: { code }, public: true });
}

/** Log in now (at launch) so the first page's calls do not wait for wx.login. */
function signIn() {
  return session.token(exchangeCode);
}

/**
 * Sign out: DELETE /v1/session revokes the stored token, then this phone forgets it, whatever the
 * server answered. Resolves, never rejects; without a stored token it sends nothing. The next call
 * that needs a token logs in again with a fresh wx.login.
 */
async function signOut() {
  const token = await session.current();
  if (!token) return;
  try {
    // `token`: a 401 here must not log in again, or signing out would sign straight back in.
    await call({ method: 'DELETE', path: '/v1/session', token, repeatable: true });
  } catch (err) {
    // 401: the token was already invalid (expired or revoked), so the user is signed out anyway.
    // No network or a server error: the token stays valid on the server until it expires, but the
    // user asked to sign out, so this phone forgets it all the same (nothing else here keeps it).
  } finally {
    session.clear();
  }
}

/**
 * Erase the account (个人信息删除权): DELETE /v1/me deletes every voice, sample, synthesis and audio
 * of the user on the server and revokes every token of theirs; then this phone forgets the session.
 * Takes a few seconds. Without a stored token it logs in first, and a 401 logs in again once and
 * repeats: a dead token proves nothing is erased, and erasing twice does no harm. Rejects with the
 * ApiError when the server could not erase; the session is kept then, so the user can try again.
 */
async function eraseAccount() {
  await call({ method: 'DELETE', path: '/v1/me', repeatable: true });
  // The session is all this mini program stores; the pages' lists and idempotency keys live in
  // memory and go with the wx.reLaunch that follows. The next call logs in to an empty account.
  session.clear();
}

/** The user's voices, newest first. */
function listVoices() {
  return call({ method: 'GET', path: '/v1/voices', repeatable: true }).then((body) => body.voices);
}

function getVoice(voiceId) {
  return call({ method: 'GET', path: `/v1/voices/${pathId(voiceId)}`, repeatable: true });
}

/**
 * Upload a recorded sample as wx.uploadFile sends it: the file under `file`, what it says as
 * `prompt_text` (the engine aligns the voice with this transcript), and the speaker's `consent`
 * ('self' or 'authorized', see utils/consent.js; required). Resolves to the new voice.
 */
function uploadVoice({ filePath, promptText, name, consent }) {
  const formData = { prompt_text: promptText, consent };
  if (name) {
    formData.name = name; // absent: the server names it 「我的声音」
  }
  return call({ method: 'POST', path: '/v1/voices', upload: { filePath, name: 'file', formData } });
}

/** Delete a voice: its sample and everything derived from it (users own their biometric data). */
function deleteVoice(voiceId) {
  return call({ method: 'DELETE', path: `/v1/voices/${pathId(voiceId)}`, repeatable: true });
}

/** Style presets `[{id, name, kind}]`, kind one of dialect / emotion / speed / volume. */
function listPresets() {
  return call({ method: 'GET', path: '/v1/presets', repeatable: true }).then((body) => body.presets);
}

/**
 * Submit text for synthesis; resolves to the task. `idempotencyKey` must stay the same when the
 * user repeats the same request after a failure, so the server answers with the first task instead
 * of synthesising twice.
 */
function createSynthesis(request, { idempotencyKey }) {
  return call({
    method: 'POST',
    path: '/v1/syntheses',
    body: request,
    headers: { 'Idempotency-Key': idempotencyKey },
    repeatable: true,
  });
}

/** The user's tasks, newest first. */
function listSyntheses({ limit }) {
  return call({ method: 'GET', path: `/v1/syntheses?limit=${limit}`, repeatable: true }).then(
    (body) => body.tasks
  );
}

function getSynthesis(taskId) {
  return call({ method: 'GET', path: `/v1/syntheses/${pathId(taskId)}`, repeatable: true });
}

/**
 * The task's audio while it is synthesised: GET its signed `stream_url` with `format=pcm`, read as
 * it arrives. s16le mono PCM at `sampleRateHz`, from the first sample to the last (the speech and its
 * audible AI label); a task that failed gives no audio (`sampleRateHz` null). The `?sig=` stands in
 * for the token, as with `audio_url`. `on`: `start({sampleRateHz})` once the response begins,
 * `chunk(ArrayBuffer)` for each piece (a piece may split a sample), then one of `end()` or
 * `error(ApiError)`. Returns `{abort()}`; after abort nothing more is reported.
 *
 * @param {{stream_url: string}} task
 * @param {{start: (res: {sampleRateHz: number | null}) => void, chunk: (data: ArrayBuffer) => void,
 *   end: () => void, error: (err: Error) => void}} on
 * @returns {{abort: () => void}}
 */
function openSynthesisStream(task, on) {
  let request = null;
  let refused = false;
  const refuse = (status, retryAfter) => {
    refused = true;
    if (request) request.abort(); // the rest is an error body, not audio
    on.error(errorFromResponse(status, null, retryAfter));
  };
  request = transport.requestChunked({
    url: `${task.stream_url}&format=pcm`,
    onHeaders: ({ status, headers }) => {
      if (status !== undefined && (status < 200 || status >= 300)) {
        refuse(status, transport.headerValue(headers, 'Retry-After'));
        return;
      }
      const rate = Number(transport.headerValue(headers, SAMPLE_RATE_HEADER));
      on.start({ sampleRateHz: Number.isInteger(rate) && rate > 0 ? rate : null });
    },
    onChunk: (data) => on.chunk(data),
    onDone: ({ status }) => {
      if (refused) return;
      if (status < 200 || status >= 300) {
        refuse(status, null);
      } else {
        on.end();
      }
    },
    onFail: (err) => on.error(err),
  });
  return { abort: () => request.abort() };
}

module.exports = {
  signIn,
  signOut,
  eraseAccount,
  listVoices,
  getVoice,
  uploadVoice,
  deleteVoice,
  listPresets,
  createSynthesis,
  listSyntheses,
  getSynthesis,
  openSynthesisStream,
};
