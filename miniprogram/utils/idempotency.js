/**
 * Idempotency keys for POST /v1/syntheses. A key names one intended submission: repeating the same
 * request (same body) after a network failure reuses it, so the server never synthesises twice.
 */

function newKey() {
  // Unique per user is enough (the server scopes keys by user); printable ASCII as the API requires.
  const random = Math.random().toString(36).slice(2, 12);
  return `mp-${Date.now().toString(36)}-${random}`;
}

/** Remembers the key of the last submission that may or may not have reached the server. */
class SubmissionKeys {
  constructor() {
    this.pending = null; // {body, key}
  }

  /** The key for this body: the pending one if the body is the same, else a fresh one. */
  keyFor(body) {
    const serialized = JSON.stringify(body);
    if (!this.pending || this.pending.body !== serialized) {
      this.pending = { body: serialized, key: newKey() };
    }
    return this.pending.key;
  }

  /** The server answered for good (a task, or a refusal): the next submission is a new one. */
  settle() {
    this.pending = null;
  }
}

module.exports = { SubmissionKeys };
