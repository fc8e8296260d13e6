/**
 * App / Page / Component / getApp for node: loads the mini program's own files with require, makes
 * page and component instances with WeChat's setData, observers and lifetimes, mounts the custom
 * components a page's WXML uses (wiring properties and events as the template says), and drives
 * handlers only through bindings that exist in the WXML.
 */
const fs = require('fs');
const path = require('path');
const { eventBindings, componentUses, readTemplate } = require('./wxml');

function setPath(data, key, value) {
  const parts = key.replace(/\[(\d+)\]/g, '.$1').split('.');
  let target = data;
  parts.slice(0, -1).forEach((part) => {
    if (target[part] === undefined || target[part] === null) target[part] = {};
    target = target[part];
  });
  target[parts[parts.length - 1]] = value;
}

/** setData as WeChat does it, including its rule that data must survive serialisation. */
function applySetData(instance, patch) {
  Object.entries(patch).forEach(([key, value]) => {
    if (value === undefined) throw new Error(`setData(${key}: undefined) is dropped by WeChat: use null`);
    setPath(instance.data, key, structuredClone(value));
  });
  return Object.keys(patch).map((key) => key.split(/[.[]/)[0]);
}

class MiniProgram {
  constructor({ root, clock }) {
    this.root = root;
    this.clock = clock;
    this.definitions = {}; // route -> {kind, def}
    this.registering = null;
    this.app = null;
    this.syncTap = false;
  }

  install(target) {
    target.App = (def) => this.register('app', def);
    target.Page = (def) => this.register('page', def);
    target.Component = (def) => this.register('component', def);
    target.getApp = () => this.app;
    target.getCurrentPages = () => [];
  }

  register(kind, def) {
    if (!this.registering) throw new Error(`${kind} registered outside a file the harness loads`);
    if (this.registering.kind !== kind) {
      throw new Error(`${this.registering.route} called ${kind}() but it is a ${this.registering.kind}`);
    }
    this.definitions[this.registering.route] = { kind, def };
  }

  file(route, ext) {
    return path.join(this.root, `${route}.${ext}`);
  }

  /** The definition a page/component/app file registers (each file is loaded once, as in WeChat). */
  definition(route, kind) {
    if (!this.definitions[route]) {
      this.registering = { route, kind };
      try {
        require(this.file(route, 'js'));
      } finally {
        this.registering = null;
      }
      if (!this.definitions[route]) throw new Error(`${route}.js never called ${kind}()`);
    }
    return this.definitions[route].def;
  }

  async launch() {
    const def = this.definition('app', 'app');
    this.app = { ...def, globalData: structuredClone(def.globalData || {}) };
    if (this.app.onLaunch) this.app.onLaunch({ path: 'pages/synthesize/synthesize', query: {} });
    await this.clock.settle();
    return this.app;
  }

  // --- pages -----------------------------------------------------------------------------------------

  async openPage(route, query = {}) {
    const def = this.definition(route, 'page');
    const page = { route, options: query, components: [] };
    Object.entries(def).forEach(([key, value]) => {
      if (key !== 'data') page[key] = value;
    });
    page.data = structuredClone(def.data || {});
    page.setData = (patch, callback) => {
      const keys = applySetData(page, patch);
      this.renderComponents(page, keys);
      if (callback) callback();
    };
    const pageJson = JSON.parse(fs.readFileSync(this.file(route, 'json'), 'utf8'));
    const usingComponents = pageJson.usingComponents || {};
    page.template = readTemplate(this.file(route, 'wxml'));
    page.componentUses = componentUses(page.template, Object.keys(usingComponents)).map((use) => ({
      ...use,
      route: usingComponents[use.tag].replace(/^\//, ''),
      instance: null,
    }));
    if (page.onLoad) page.onLoad(query);
    this.renderComponents(page, null);
    await this.show(page);
    return page;
  }

  async show(page) {
    if (page.onShow) page.onShow();
    await this.clock.settle();
  }

  async hide(page) {
    if (page.onHide) page.onHide();
    page.componentUses.forEach((use) => use.instance && this.pageLifetime(use.instance, 'hide'));
    await this.clock.settle();
  }

  async unload(page) {
    if (page.onUnload) page.onUnload();
    page.componentUses.forEach((use) => use.instance && this.detach(use));
    await this.clock.settle();
  }

  /** Mount, update or detach the page's components after its data changed (`keys` null: all). */
  renderComponents(page, keys) {
    (page.componentUses || []).forEach((use) => {
      const shown = use.condition ? Boolean(use.condition.read(page.data)) : true;
      if (shown && !use.instance) {
        this.mount(page, use);
      } else if (!shown && use.instance) {
        this.detach(use);
      } else if (shown) {
        Object.entries(use.properties).forEach(([name, expr]) => {
          if (keys === null || expr.keys.some((k) => keys.includes(k))) {
            use.instance.setProperty(name, expr.read(page.data));
          }
        });
      }
    });
  }

  mount(page, use) {
    const def = this.definition(use.route, 'component');
    const component = this.instantiateComponent(def, use.route, (name, detail) => {
      const handler = use.events[name];
      if (!handler) return;
      page[handler]({ type: name, detail, currentTarget: { dataset: {} }, target: { dataset: {} } });
    });
    use.instance = component;
    if (def.lifetimes && def.lifetimes.created) def.lifetimes.created.call(component);
    Object.entries(use.properties).forEach(([name, expr]) => {
      component.setProperty(name, expr.read(page.data));
    });
    if (def.lifetimes && def.lifetimes.attached) def.lifetimes.attached.call(component);
  }

  detach(use) {
    const def = this.definition(use.route, 'component');
    if (def.lifetimes && def.lifetimes.detached) def.lifetimes.detached.call(use.instance);
    use.instance = null;
  }

  pageLifetime(component, name) {
    const def = this.definition(component.route, 'component');
    if (def.pageLifetimes && def.pageLifetimes[name]) def.pageLifetimes[name].call(component);
  }

  instantiateComponent(def, route, emit) {
    const properties = def.properties || {};
    const component = { route, template: readTemplate(this.file(route, 'wxml')) };
    component.data = structuredClone(def.data || {});
    Object.entries(properties).forEach(([name, spec]) => {
      component.data[name] = spec && spec.value !== undefined ? spec.value : null;
    });
    component.properties = component.data; // WeChat aliases them too
    Object.entries(def.methods || {}).forEach(([name, fn]) => (component[name] = fn));
    const runObservers = (keys) => {
      Object.entries(def.observers || {}).forEach(([fields, fn]) => {
        const names = fields.split(',').map((f) => f.trim());
        if (names.some((n) => keys.includes(n))) fn.apply(component, names.map((n) => component.data[n]));
      });
    };
    component.setData = (patch, callback) => {
      runObservers(applySetData(component, patch));
      if (callback) callback();
    };
    component.setProperty = (name, value) => {
      if (!(name in properties)) throw new Error(`${route} has no property ${name}`);
      const previous = component.data[name];
      component.data[name] = value;
      // A bound property's observer fires when the page gives it a new value.
      if (value !== previous) runObservers([name]);
    };
    component.triggerEvent = (name, detail) => emit(name, structuredClone(detail));
    return component;
  }

  // --- driving handlers ------------------------------------------------------------------------------

  /**
   * Run the handler a WXML binding names, as a tap (or input, change …) would: it must be bound in
   * the template, and its synchronous part runs "inside the tap" for wx.requestSubscribeMessage.
   */
  async trigger(target, handler, { type = 'tap', detail = {}, dataset = {} } = {}) {
    const bound = eventBindings(target.template).some((b) => b.handler === handler);
    if (!bound) throw new Error(`no WXML binding of ${target.route || 'component'} calls ${handler}`);
    if (typeof target[handler] !== 'function') throw new Error(`${handler} is not a function`);
    const event = { type, detail, currentTarget: { dataset }, target: { dataset } };
    this.syncTap = true;
    let result;
    try {
      result = target[handler](event);
    } finally {
      this.syncTap = false;
    }
    await result;
    await this.clock.settle();
  }
}

module.exports = { MiniProgram };
