/**
 * Virtual timers: the mini program's setTimeout/setInterval run when a scenario advances the clock,
 * so backoff sequences (1 s, 2 s, 4 s, 8 s …) are checked exactly and the test takes milliseconds.
 */
const realSetImmediate = setImmediate;

class VirtualClock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  /** Replace the global timer functions the mini program code calls. */
  install(target) {
    target.setTimeout = (fn, ms, ...args) => this.add(fn, ms, args, false);
    target.setInterval = (fn, ms, ...args) => this.add(fn, ms, args, true);
    target.clearTimeout = (id) => this.timers.delete(id);
    target.clearInterval = (id) => this.timers.delete(id);
  }

  add(fn, ms, args, repeat) {
    const delay = Math.max(0, Number(ms) || 0);
    const id = this.nextId++;
    this.timers.set(id, { id, fn, args, at: this.now + delay, every: repeat ? Math.max(1, delay) : 0 });
    return id;
  }

  /** Let every pending promise chain run (fake wx answers arrive as microtasks). */
  async settle() {
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => realSetImmediate(resolve));
    }
  }

  /** Run the timers due within `ms`, in time order, settling promises between them. */
  async advance(ms) {
    const until = this.now + ms;
    for (;;) {
      await this.settle();
      const due = [...this.timers.values()]
        .filter((t) => t.at <= until)
        .sort((a, b) => a.at - b.at || a.id - b.id);
      if (!due.length) break;
      const timer = due[0];
      this.now = timer.at;
      if (timer.every) {
        timer.at += timer.every;
      } else {
        this.timers.delete(timer.id);
      }
      timer.fn(...timer.args);
    }
    this.now = until;
    await this.settle();
  }

  pendingCount() {
    return this.timers.size;
  }
}

module.exports = { VirtualClock };
