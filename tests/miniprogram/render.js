#!/usr/bin/env node
/**
 * Renders the <task-result> component with its own WXML and WXSS in miniprogram-simulate (WeChat's
 * j-component over a jsdom document) and checks what a user sees while the result streams and once
 * it is done, and that the stop button's tap reaches the handler. run.js drives the same code
 * through a template reader of its own; this is WeChat's own template engine.
 *   node render.js <miniprogram dir>
 * Prints one JSON line {ok, checks, error}; exit status 0 when every check passed.
 * Needs the root package.json's devDependencies (`npm ci`); tests/test_miniprogram_render.py runs it.
 */
const path = require('path');
const assert = require('assert/strict');
const { JSDOM } = require('jsdom');

const jsdom = new JSDOM('<!doctype html><html><body></body></html>');
Object.assign(global, {
  window: jsdom.window,
  document: jsdom.window.document,
  navigator: jsdom.window.navigator,
  Node: jsdom.window.Node,
  HTMLElement: jsdom.window.HTMLElement,
  // j-component dispatches these on jsdom's nodes: jsdom's own, not node's built-in ones.
  Event: jsdom.window.Event,
  CustomEvent: jsdom.window.CustomEvent,
});
const simulate = require('miniprogram-simulate');

/** Just the wx the component touches when it is made; anything else is a bug of this test. */
function fakeWx(effects) {
  const audioContext = {
    onPlay() {},
    onEnded() {},
    onStop() {},
    onError() {},
    play: () => effects.push('innerAudio.play'),
    stop: () => effects.push('innerAudio.stop'),
    destroy() {},
  };
  const wx = {
    getAccountInfoSync: () => ({ miniProgram: { envVersion: 'develop' } }),
    createInnerAudioContext: () => audioContext,
    canIUse: () => true,
  };
  return new Proxy(wx, {
    get(target, name) {
      if (!(name in target)) throw new Error(`render.js: the component called wx.${String(name)}`);
      return target[name];
    },
  });
}

const RUNNING = { task_id: 't_aaaaaaaaaaaaaaaaaaaaaaaaaa', status: 'running', text: '你好', voice_id: 'v_x' };
const SUCCEEDED = { ...RUNNING, status: 'succeeded', audio_url: 'https://api.example/a?sig=1', duration_s: 1.2 };

function text(component, selector) {
  const node = component.querySelector(selector);
  return node ? node.dom.textContent.trim() : null;
}

async function main() {
  const root = path.resolve(process.argv[2]);
  const effects = [];
  global.wx = fakeWx(effects);
  const checks = [];
  const check = (name, fn) => {
    fn();
    checks.push(name);
  };

  const id = simulate.load(path.join(root, 'components/task-result/task-result'), 'task-result', {
    rootPath: root,
  });
  const result = simulate.render(id, { taskId: '' });
  result.attach(document.createElement('parent-wrapper'));

  check('nothing shows before there is a task', () => {
    assert.equal(result.dom.textContent.trim(), '');
  });

  result.setData({ task: RUNNING, statusText: '合成中', stage: 2, playing: 'stream' });
  check('while it streams: the steps, a stop button and the AIGC label; no A/B yet', () => {
    assert.equal(text(result, '.now-playing'), '正在边合成边播放…■ 停止');
    assert.equal(text(result, '.aigc-label'), '本音频由 AI 生成');
    assert.equal(result.querySelector('.ab'), undefined);
    assert.equal(text(result, '.tag'), '合成中');
  });

  const stop = result.querySelector('.now-playing .ab-button');
  stop.dispatchEvent('tap');
  await simulate.sleep(0);
  check('the stop button reaches stopStream: the stream block and its label go', () => {
    assert.equal(result.data.playing, '');
    assert.equal(result.querySelector('.now-playing'), undefined);
    assert.equal(result.querySelector('.aigc-label'), undefined, 'no audio playing, none finished');
  });

  result.setData({ task: SUCCEEDED, statusText: '已完成', stage: 3, sampleUrl: '' });
  check('once done: A/B, with the label', () => {
    const buttons = result.querySelectorAll('.ab .ab-button');
    assert.deepEqual(
      buttons.map((b) => b.dom.textContent.trim()),
      ['A 原声', 'B 合成']
    );
    assert.equal(text(result, '.aigc-label'), '本音频由 AI 生成');
  });

  result.querySelectorAll('.ab .ab-button')[1].dispatchEvent('tap');
  await simulate.sleep(0);
  check('B plays the finished file', () => {
    assert.deepEqual(effects, ['innerAudio.play']);
  });

  result.setData({ task: { ...RUNNING, status: 'failed', error: { code: 'x', message: '合成失败，请稍后再试' } } });
  check('a failed task says why', () => {
    assert.equal(text(result, '.failure'), '合成失败，请稍后再试');
    assert.equal(result.querySelector('.aigc-label'), undefined);
  });
  result.detach();
  return checks;
}

main()
  .then((checks) => {
    console.log(JSON.stringify({ ok: true, checks }));
  })
  .catch((err) => {
    console.log(JSON.stringify({ ok: false, error: String(err && err.stack ? err.stack : err) }));
    process.exitCode = 1;
  });
