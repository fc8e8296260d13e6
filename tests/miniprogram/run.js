#!/usr/bin/env node
/**
 * Runs every scenario against a fresh copy of the mini program and writes one JSON report:
 *   node run.js <miniprogram dir> <fixtures.json> <report.json>
 * The report lists each scenario's outcome, every wx.request / wx.uploadFile call with the answer it
 * got, every audio URL played, which utils/api.js functions ran, and the handlers each page and
 * component defines. tests/test_miniprogram.py checks it against the OpenAPI document.
 */
const fs = require('fs');
const path = require('path');
const { createWorld } = require('./world');
const { scenarios } = require('./scenarios');

// Scenarios run with a subscription template configured (the shipped config leaves it empty).
const TEMPLATE_ID = 'tmpl-finished';

function definedHandlers(root, fixtures) {
  const world = createWorld({ root, fixtures, invokedApi: new Set() });
  const app = JSON.parse(fs.readFileSync(path.join(root, 'app.json'), 'utf8'));
  const handlers = {};
  const components = new Set();
  app.pages.forEach((route) => {
    const def = world.runtime.definition(route, 'page');
    handlers[route] = Object.keys(def).filter((k) => typeof def[k] === 'function');
    const json = JSON.parse(fs.readFileSync(path.join(root, `${route}.json`), 'utf8'));
    Object.values(json.usingComponents || {}).forEach((c) => components.add(c.replace(/^\//, '')));
  });
  components.forEach((route) => {
    const def = world.runtime.definition(route, 'component');
    handlers[route] = Object.keys(def.methods || {});
  });
  return handlers;
}

async function main() {
  const [root, fixturesFile, reportFile] = process.argv.slice(2).map((p) => path.resolve(p));
  const fixtures = JSON.parse(fs.readFileSync(fixturesFile, 'utf8'));
  const invokedApi = new Set();
  const report = { scenarios: [], calls: [], audio: [] };

  for (const [name, scenario] of Object.entries(scenarios)) {
    const world = createWorld({ root, fixtures, invokedApi, settings: { subscribeTemplateId: TEMPLATE_ID } });
    let error = null;
    try {
      await scenario(world);
    } catch (err) {
      error = err && err.stack ? err.stack : String(err);
    }
    report.scenarios.push({ name, ok: error === null, error });
    world.calls.forEach((call) => report.calls.push({ scenario: name, ...call }));
    world.ui.audioPlays.forEach((src) => report.audio.push({ scenario: name, src }));
  }

  const world = createWorld({ root, fixtures, invokedApi: new Set() });
  report.config = world.config;
  report.apiExports = Object.keys(require(path.join(root, 'utils/api.js')));
  report.apiInvoked = [...invokedApi].sort();
  report.handlers = definedHandlers(root, fixtures);
  fs.writeFileSync(reportFile, JSON.stringify(report, null, 2));
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
