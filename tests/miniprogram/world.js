/**
 * One fresh mini program for one scenario: virtual clock, fake API, fake wx, the runtime, and the
 * mini program's modules loaded anew (no state leaks from one scenario to the next).
 */
const path = require('path');
const { VirtualClock } = require('./clock');
const { FakeApi } = require('./fake_api');
const { createWx } = require('./fake_wx');
const { MiniProgram } = require('./runtime');

/** Wrap each export of utils/api.js so the report can say which ones the scenarios exercised. */
function instrumentApi(api, invoked) {
  Object.keys(api).forEach((name) => {
    const original = api[name];
    api[name] = (...args) => {
      invoked.add(name);
      return original(...args);
    };
  });
}

function createWorld({ root, fixtures, invokedApi, settings = {} }) {
  Object.keys(require.cache)
    .filter((file) => file.startsWith(root + path.sep))
    .forEach((file) => delete require.cache[file]);

  const clock = new VirtualClock();
  clock.install(globalThis);
  const runtime = new MiniProgram({ root, clock });
  const wxSettings = { subscribeAnswer: 'accept', modalConfirm: true, ...settings };
  // The config module reads wx at load time, so wx exists before any mini program file loads; the
  // API base URL is only known after that, hence the late binding of the fake API.
  const holder = {};
  const fake = createWx({
    api: {
      handle: (call) => holder.api.handle(call),
      streamMode: () => holder.api.streamMode,
      streamPlan: (reply) => holder.api.streamPlan(reply),
    },
    clock,
    isInTap: () => runtime.syncTap,
    settings: wxSettings,
  });
  globalThis.wx = fake.wx;
  runtime.install(globalThis);

  const config = require(path.join(root, 'config.js'));
  if (settings.subscribeTemplateId !== undefined) config.subscribeTemplateId = settings.subscribeTemplateId;
  holder.api = new FakeApi({ baseUrl: config.apiBaseUrl, fixtures, clock });
  instrumentApi(require(path.join(root, 'utils/api.js')), invokedApi);

  return {
    clock,
    runtime,
    config,
    fixtures,
    settings: wxSettings,
    api: holder.api,
    calls: fake.calls,
    ui: fake.ui,
    storage: fake.storage,
    wx: fake,
  };
}

module.exports = { createWorld };
