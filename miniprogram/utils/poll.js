/**
 * Polling with exponential backoff: ask now, then after 1 s, 2 s, 4 s … up to a cap, until the
 * answer is final. A slow GPU queue costs a handful of requests, not one a second.
 */
const { isTransient } = require('./errors');

const MAX_FAILURES_IN_A_ROW = 5;

/**
 * `fetch()` resolves to the current state; `isFinal(state)` ends the polling; `onUpdate(state)` sees
 * every answer; `onError(err, {gaveUp})` sees failures (gaveUp: polling stopped). A server's
 * Retry-After lengthens the next wait. `immediately: false` waits `firstDelayMs` before the first
 * ask (the caller has just seen the state). Returns `{stop()}`; a page must stop it when it goes away.
 */
function poll({
  fetch,
  isFinal,
  onUpdate,
  onError,
  firstDelayMs = 1000,
  maxDelayMs = 8000,
  immediately = true,
}) {
  let stopped = false;
  let timer = null;
  let delayMs = firstDelayMs;
  let failures = 0;

  function scheduleNext(minimumMs) {
    timer = setTimeout(tick, Math.max(delayMs, minimumMs));
    delayMs = Math.min(delayMs * 2, maxDelayMs);
  }

  async function tick() {
    timer = null;
    let state;
    try {
      state = await fetch();
    } catch (err) {
      if (stopped) return;
      failures += 1;
      const gaveUp = !isTransient(err) || failures >= MAX_FAILURES_IN_A_ROW;
      stopped = gaveUp;
      onError(err, { gaveUp });
      if (!gaveUp) scheduleNext((err.retryAfterS || 0) * 1000);
      return;
    }
    if (stopped) return;
    failures = 0;
    onUpdate(state);
    if (isFinal(state)) {
      stopped = true;
      return;
    }
    scheduleNext(0);
  }

  if (immediately) {
    tick();
  } else {
    scheduleNext(0);
  }
  return {
    stop() {
      stopped = true;
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}

module.exports = { poll };
