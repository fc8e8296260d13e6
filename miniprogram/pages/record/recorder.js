/**
 * The page's view of wx.getRecorderManager(): start with our settings, report the outcome once.
 * RecorderManager is a process-wide singleton whose listeners replace each other, so one page owns it.
 */
const config = require('../../config');

const PERMISSION_DENIED = /auth|permission|deny/i;

/**
 * `handlers`: onStart(), onDone({filePath, durationMs}), onTooShort(durationMs), onDenied(),
 * onFailed(errMsg). A phone call or an alarm stops the recording; what was said so far is kept.
 */
function createRecorder(handlers) {
  const manager = wx.getRecorderManager();
  const { minDurationMs, maxDurationMs, ...encoding } = config.recording; // format, rate, channels, bit rate

  manager.onStart(() => handlers.onStart());
  manager.onStop((res) => {
    if (res.duration < minDurationMs) {
      handlers.onTooShort(res.duration);
    } else {
      handlers.onDone({ filePath: res.tempFilePath, durationMs: res.duration });
    }
  });
  manager.onError((err) => {
    const errMsg = (err && err.errMsg) || '';
    if (PERMISSION_DENIED.test(errMsg)) {
      handlers.onDenied();
    } else {
      handlers.onFailed(errMsg);
    }
  });
  manager.onInterruptionBegin(() => manager.stop());

  return {
    start() {
      // maxDurationMs is enforced by the recorder itself: it stops and reports through onStop.
      manager.start({ duration: maxDurationMs, ...encoding });
    },
    stop() {
      manager.stop();
    },
  };
}

module.exports = { createRecorder };
