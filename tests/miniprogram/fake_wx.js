/**
 * A fake `wx` for node: records every network call (what the test validates against the OpenAPI
 * document) and every user-visible effect (toasts, modals, navigation, audio), answers from FakeApi,
 * and throws on any wx API it does not know, so a new call in the mini program cannot go unchecked.
 */

function respondLater(fn) {
  Promise.resolve().then(fn); // WeChat answers asynchronously, never inside the call
}

function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

function createRecorderManager(clock, ui) {
  const handlers = {};
  const manager = {
    recording: false,
    startedAt: 0,
    autoStopTimer: null,
    onStart: (cb) => (handlers.start = cb),
    onStop: (cb) => (handlers.stop = cb),
    onError: (cb) => (handlers.error = cb),
    onInterruptionBegin: (cb) => (handlers.interruption = cb),
    start(options) {
      ui.recorderStarts.push(clone(options));
      if (manager.denyPermission) {
        respondLater(() => handlers.error({ errMsg: 'operateRecorder:fail auth deny' }));
        return;
      }
      manager.recording = true;
      manager.startedAt = clock.now;
      manager.options = options;
      // The real recorder stops itself at `duration` and reports through onStop.
      manager.autoStopTimer = setTimeout(() => manager.stop(), options.duration);
      respondLater(() => handlers.start());
    },
    stop() {
      if (!manager.recording) return;
      manager.recording = false;
      clearTimeout(manager.autoStopTimer);
      const duration = Math.min(clock.now - manager.startedAt, manager.options.duration);
      const tempFilePath = `wxfile://tmp/recording_${duration}ms.${manager.options.format}`;
      respondLater(() => handlers.stop({ tempFilePath, duration, fileSize: duration * 6 }));
    },
    interrupt() {
      handlers.interruption();
    },
  };
  return manager;
}

function createAudioContext(ui) {
  const handlers = {};
  const context = {
    src: '',
    destroyed: false,
    onPlay: (cb) => (handlers.play = cb),
    onEnded: (cb) => (handlers.ended = cb),
    onStop: (cb) => (handlers.stop = cb),
    onError: (cb) => (handlers.error = cb),
    play() {
      ui.audioPlays.push(context.src);
      respondLater(() => handlers.play());
    },
    stop() {
      respondLater(() => handlers.stop());
    },
    destroy() {
      context.destroyed = true;
    },
    finish() {
      handlers.ended();
    },
  };
  ui.audioContexts.push(context);
  return context;
}

/**
 * `settings`: subscribeAnswer ('accept' | 'reject' | 'fail'), modalConfirm (bool). `isInTap()` says
 * whether a tap handler is running synchronously right now (WeChat's rule for subscription prompts).
 */
function createWx({ api, clock, isInTap, settings }) {
  const storage = new Map();
  const calls = [];
  const ui = {
    toasts: [],
    modals: [],
    loadings: [], // {title, mask} of every wx.showLoading
    loadingShown: false,
    navigations: [],
    subscribeRequests: [],
    recorderStarts: [],
    audioPlays: [],
    audioContexts: [],
    logins: 0,
    openedSettings: 0,
    stoppedRefresh: 0,
    audioOptions: [],
  };
  let recorder = null;

  function record(call) {
    const reply = api.handle(call);
    calls.push({ ...call, at: clock.now, reply: clone(reply) });
    return reply;
  }

  const wx = {
    getAccountInfoSync: () => ({ miniProgram: { appId: 'touristappid', envVersion: 'develop' } }),

    request(options) {
      const reply = record({
        kind: 'request',
        url: options.url,
        method: options.method || 'GET',
        header: clone(options.header || {}),
        data: clone(options.data),
      });
      respondLater(() => {
        if (reply.networkError) {
          options.fail({ errMsg: `request:fail ${reply.networkError}` });
        } else {
          options.success({ statusCode: reply.status, data: clone(reply.body), header: reply.headers });
        }
      });
      return { abort() {} };
    },

    uploadFile(options) {
      const reply = record({
        kind: 'uploadFile',
        url: options.url,
        method: 'POST',
        header: clone(options.header || {}),
        name: options.name,
        filePath: options.filePath,
        formData: clone(options.formData || {}),
      });
      respondLater(() => {
        if (reply.networkError) {
          options.fail({ errMsg: `uploadFile:fail ${reply.networkError}` });
        } else {
          const data = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
          options.success({ statusCode: reply.status, data, header: reply.headers });
        }
      });
      return { abort() {}, onProgressUpdate() {} };
    },

    login(options) {
      ui.logins += 1;
      respondLater(() => options.success({ code: `code-${ui.logins}`, errMsg: 'login:ok' }));
    },

    getStorageSync: (key) => (storage.has(key) ? clone(storage.get(key)) : ''),
    setStorageSync: (key, value) => storage.set(key, clone(value)),
    removeStorageSync: (key) => storage.delete(key),

    showToast: (options) => {
      ui.loadingShown = false; // WeChat shows one of the two at a time
      ui.toasts.push(options.title);
    },
    showLoading(options) {
      ui.loadings.push({ title: options.title, mask: Boolean(options.mask) });
      ui.loadingShown = true;
    },
    hideLoading: () => (ui.loadingShown = false),
    showModal(options) {
      ui.modals.push(options.title);
      const confirm = settings.modalConfirm !== false;
      respondLater(() => options.success && options.success({ confirm, cancel: !confirm }));
    },

    requestSubscribeMessage(options) {
      ui.subscribeRequests.push({ tmplIds: options.tmplIds, inTap: isInTap() });
      respondLater(() => {
        if (settings.subscribeAnswer === 'fail') {
          options.fail({ errMsg: 'requestSubscribeMessage:fail', errCode: 20004 });
        } else {
          const answer = { errMsg: 'requestSubscribeMessage:ok' };
          options.tmplIds.forEach((id) => (answer[id] = settings.subscribeAnswer || 'accept'));
          options.success(answer);
        }
      });
    },

    getRecorderManager() {
      recorder = recorder || createRecorderManager(clock, ui);
      return recorder;
    },
    createInnerAudioContext: () => createAudioContext(ui),
    setInnerAudioOption: (options) => ui.audioOptions.push(options),

    navigateTo: (options) => ui.navigations.push({ how: 'navigateTo', url: options.url }),
    switchTab: (options) => ui.navigations.push({ how: 'switchTab', url: options.url }),
    reLaunch(options) {
      ui.navigations.push({ how: 'reLaunch', url: options.url });
      respondLater(() => options.success && options.success({ errMsg: 'reLaunch:ok' }));
    },
    stopPullDownRefresh: () => (ui.stoppedRefresh += 1),
    openSetting: () => (ui.openedSettings += 1),
  };

  const strict = new Proxy(wx, {
    get(target, name) {
      if (!(name in target)) throw new Error(`the fake wx has no wx.${String(name)}: add it to the harness`);
      return target[name];
    },
  });
  return { wx: strict, calls, ui, storage, recorder: () => recorder };
}

module.exports = { createWx };
