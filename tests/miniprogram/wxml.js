/**
 * Just enough WXML reading for the harness and the test: which handlers a template binds, and how a
 * page passes data and events to the custom components it uses.
 */
const fs = require('fs');

// bindtap="x", bind:tap="x", catchtap, mut-bind:, capture-bind:, capture-catch:
const BINDING = /\s(?:capture-)?(?:mut-)?(?:bind|catch):?([a-z]+)="([^"]*)"/g;

/** [{event, handler}] for every event binding in the template. */
function eventBindings(source) {
  return [...source.matchAll(BINDING)].map((m) => ({ event: m[1], handler: m[2] }));
}

function attributes(tagSource) {
  const attrs = {};
  for (const m of tagSource.matchAll(/([\w:-]+)="([^"]*)"/g)) attrs[m[1]] = m[2];
  return attrs;
}

function kebabToCamel(name) {
  return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
}

/** `{{path}}` or `{{!path}}` → a reader of page data; a literal → itself. Anything else: unsupported. */
function expression(value) {
  const m = value.match(/^\{\{\s*(!?)([\w.]+)\s*\}\}$/);
  if (!m) {
    if (value.includes('{{')) throw new Error(`the harness cannot evaluate ${value} on a component tag`);
    return { keys: [], read: () => value };
  }
  const [, negate, path] = m;
  const read = (data) => {
    const v = path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), data);
    return negate ? !v : v;
  };
  return { keys: [path.split('.')[0]], read };
}

/**
 * Each use of a custom component in a template: its tag, `wx:if` condition, property bindings
 * (camelCase name → expression) and event bindings (event → handler).
 */
function componentUses(source, tagNames) {
  const uses = [];
  for (const tag of tagNames) {
    const pattern = new RegExp(`<${tag}(\\s[^>]*?)?/?>`, 'g');
    for (const m of source.matchAll(pattern)) {
      const attrs = attributes(m[1] || '');
      const use = { tag, condition: null, properties: {}, events: {} };
      for (const [name, value] of Object.entries(attrs)) {
        const event = name.match(/^(?:bind|catch):?([a-z]+)$/);
        if (name === 'wx:if') use.condition = expression(value);
        else if (event) use.events[event[1]] = value;
        else if (!name.startsWith('wx:') && name !== 'class' && name !== 'style') {
          use.properties[kebabToCamel(name)] = expression(value);
        }
      }
      uses.push(use);
    }
  }
  return uses;
}

function readTemplate(file) {
  return fs.readFileSync(file, 'utf8').replace(/<!--[\s\S]*?-->/g, '');
}

module.exports = { eventBindings, componentUses, readTemplate };
