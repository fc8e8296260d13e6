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

/** `listeners` without `cb`; without any, when `cb` is not given (as WeChat's off… do). */
function without(listeners, cb) {
  return cb ? listeners.filter((l) => l !== cb) : [];
}

/** An ArrayBuffer holding exactly these bytes (what onChunkReceived hands over). */
function arrayBufferOf(bytes) {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

/**
 * A wx.request with `enableChunked`: its RequestTask (onHeadersReceived / onChunkReceived / abort)
 * and the response as the fake API gave it. A scenario drives it by hand (`sendHeaders`, `send`,
 * `finish`, `fail`); with a `plan` (FakeApi.streamPlan, the default) it plays itself out on the
 * virtual clock: headers, then the chunks at their times, then success. Nothing is reported after
 * abort(), and whatever a scenario sends then is dropped (and counted in `dropped`).
 */
class FakeChunkedRequest {
  constructor({ options, reply, clock, plan }) {
    this.options = options;
    this.reply = reply;
    this.clock = clock;
    this.state = 'open'; // open | headers | done | failed | aborted
    this.listeners = { headers: [], chunk: [] };
    this.timers = new Set();
    this.sentBytes = 0;
    this.dropped = 0;
    if (reply.networkError) {
      respondLater(() => this.fail(reply.networkError));
    } else if (plan) {
      this.later(plan.headersAfterMs, () => this.sendHeaders());
      plan.chunks.forEach(({ atMs, bytes }) => this.later(atMs, () => this.send(bytes)));
      this.later(plan.finishAfterMs, () => this.finish());
    }
  }

  /** Run `fn` `ms` from now on the virtual clock, unless the request is aborted first. */
  later(ms, fn) {
    const id = this.clock.add(
      () => {
        this.timers.delete(id);
        fn();
      },
      ms,
      [],
      false
    );
    this.timers.add(id);
  }

  get over() {
    return ['done', 'failed', 'aborted'].includes(this.state);
  }

  /** The RequestTask wx.request returns. */
  task() {
    return {
      abort: () => this.abort(),
      onHeadersReceived: (cb) => this.listeners.headers.push(cb),
      offHeadersReceived: (cb) => (this.listeners.headers = without(this.listeners.headers, cb)),
      onChunkReceived: (cb) => this.listeners.chunk.push(cb),
      offChunkReceived: (cb) => (this.listeners.chunk = without(this.listeners.chunk, cb)),
    };
  }

  /** The response's status and headers; `lowercase` names them as HTTP/2 does. */
  sendHeaders({ lowercase = false } = {}) {
    if (this.over) return void (this.dropped += 1);
    if (this.state === 'headers') throw new Error('headers were sent already');
    this.state = 'headers';
    const header = {};
    Object.entries(this.reply.headers || {}).forEach(([name, value]) => {
      header[lowercase ? name.toLowerCase() : name] = value;
    });
    this.listeners.headers.forEach((cb) => cb({ header, statusCode: this.reply.status, cookies: [] }));
  }

  /** One chunk of the body: a Uint8Array, handed over as an ArrayBuffer. */
  send(bytes) {
    if (this.over) return void (this.dropped += 1);
    if (this.state !== 'headers') throw new Error('a chunk before the headers');
    this.sentBytes += bytes.byteLength;
    this.listeners.chunk.forEach((cb) => cb({ data: arrayBufferOf(bytes) }));
  }

  finish() {
    if (this.over) return void (this.dropped += 1);
    if (this.state !== 'headers') this.sendHeaders();
    this.state = 'done';
    const { status, headers } = this.reply;
    this.options.success({ statusCode: status, data: new ArrayBuffer(0), header: headers, cookies: [] });
  }

  fail(reason = 'interrupted') {
    if (this.over) return void (this.dropped += 1);
    this.state = 'failed';
    this.options.fail({ errMsg: `request:fail ${reason}` });
  }

  abort() {
    if (this.over) return;
    this.state = 'aborted';
    this.timers.forEach((id) => this.clock.timers.delete(id));
    this.timers.clear();
    // WeChat reports an aborted request through fail, later.
    respondLater(() => this.options.fail({ errMsg: 'request:fail abort' }));
  }
}

/**
 * A fake WebAudioContext: records every AudioBuffer made and every AudioBufferSourceNode started
 * (`scheduled`: when, duration, the samples, and the audio clock at that moment). `currentTime`
 * follows the virtual clock from the context's creation; `freeze(t)` holds it at `t` (the audio
 * clock of a phone that is busy, or just a fixed point to measure from), `thaw()` lets it run on
 * from there. Starting a node twice, without a buffer, unconnected or on a closed context throws.
 */
function createWebAudioContext(clock, ui, settings) {
  let bornAt = clock.now;
  let frozenAt = null;
  const destination = { kind: 'destination' };
  const context = {
    sampleRate: 48000,
    state: 'running',
    destination,
    buffers: [],
    scheduled: [],
    get currentTime() {
      return frozenAt !== null ? frozenAt : (clock.now - bornAt) / 1000;
    },
    freeze(t) {
      frozenAt = t;
    },
    thaw() {
      if (frozenAt === null) return;
      bornAt = clock.now - frozenAt * 1000;
      frozenAt = null;
    },
    createBuffer(numberOfChannels, length, sampleRate) {
      if (context.state === 'closed') throw new Error('createBuffer on a closed WebAudioContext');
      if (!(length > 0) || !Number.isInteger(length)) throw new Error(`createBuffer length ${length}`);
      const channels = Array.from({ length: numberOfChannels }, () => new Float32Array(length));
      const buffer = {
        numberOfChannels,
        length,
        sampleRate,
        duration: length / sampleRate,
        getChannelData: (channel) => channels[channel],
      };
      if (!(settings.webAudio && settings.webAudio.noCopyToChannel)) {
        buffer.copyToChannel = (source, channel, startInChannel = 0) => {
          channels[channel].set(source, startInChannel);
        };
      }
      context.buffers.push(buffer);
      return buffer;
    },
    createBufferSource() {
      const node = {
        buffer: null,
        connectedTo: null,
        started: false,
        stopped: false,
        onended: null,
        connect(target) {
          node.connectedTo = target;
        },
        disconnect() {
          node.connectedTo = null;
        },
        start(when = 0) {
          if (context.state === 'closed') throw new Error('start() on a closed WebAudioContext');
          if (node.started) throw new Error('an AudioBufferSourceNode starts once');
          if (!node.buffer) throw new Error('start() without a buffer');
          if (node.connectedTo !== destination) throw new Error('start() of a node not connected to the output');
          node.started = true;
          context.scheduled.push({
            when,
            duration: node.buffer.duration,
            length: node.buffer.length,
            sampleRate: node.buffer.sampleRate,
            samples: Array.from(node.buffer.getChannelData(0)),
            currentTime: context.currentTime,
            clockMs: clock.now,
            node,
          });
        },
        stop() {
          node.stopped = true;
        },
      };
      return node;
    },
    resume: () => Promise.resolve(),
    suspend: () => Promise.resolve(),
    close() {
      context.state = 'closed';
      return Promise.resolve();
    },
  };
  ui.webAudioContexts.push(context);
  return context;
}

/**
 * `settings`: subscribeAnswer ('accept' | 'reject' | 'fail'), modalConfirm (bool), unsupported (the
 * wx.canIUse schemas this base library lacks), webAudio ({noCopyToChannel}). `isInTap()` says
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
    canIUse: [], // every schema asked about
    streams: [], // FakeChunkedRequest of every wx.request with enableChunked
    webAudioContexts: [],
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
      const call = {
        kind: 'request',
        url: options.url,
        method: options.method || 'GET',
        header: clone(options.header || {}),
        data: clone(options.data),
      };
      if (options.enableChunked) {
        Object.assign(call, { enableChunked: true, responseType: options.responseType });
      }
      const reply = record(call);
      if (options.enableChunked) {
        if (settings.unsupported && settings.unsupported.includes('request.object.enableChunked')) {
          throw new Error('enableChunked on a base library without it: check wx.canIUse first');
        }
        const plan = reply.networkError || api.streamMode() !== 'auto' ? null : api.streamPlan(reply);
        const stream = new FakeChunkedRequest({ options, reply, clock, plan });
        ui.streams.push(stream);
        return stream.task();
      }
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
    createWebAudioContext() {
      if (settings.unsupported && settings.unsupported.includes('createWebAudioContext')) {
        throw new Error('wx.createWebAudioContext on a base library without it: check wx.canIUse first');
      }
      return createWebAudioContext(clock, ui, settings);
    },
    canIUse(schema) {
      ui.canIUse.push(schema);
      return !(settings.unsupported || []).includes(schema);
    },
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
