/**
 * Following WeChat's review of uploaded voices: one backoff poller per voice still
 * `pending_review`, until it is `ready` or `rejected`. The audio check can take up to 30 minutes,
 * so waits grow to 30 s; a page stops everything when it is hidden and starts again when shown.
 */
const api = require('../../utils/api');
const { poll } = require('../../utils/poll');

const FIRST_DELAY_MS = 2000;
const MAX_DELAY_MS = 30000;

class Reviews {
  /** `onUpdate(voice)` sees every answer; `onGiveUp(err)` a poller that stopped on an error. */
  constructor({ onUpdate, onGiveUp }) {
    this.onUpdate = onUpdate;
    this.onGiveUp = onGiveUp;
    this.pollers = {}; // voice_id -> poller
  }

  follow(voiceId) {
    if (this.pollers[voiceId]) return;
    this.pollers[voiceId] = poll({
      fetch: () => api.getVoice(voiceId),
      isFinal: (voice) => voice.status !== 'pending_review',
      onUpdate: (voice) => {
        if (voice.status !== 'pending_review') delete this.pollers[voiceId];
        this.onUpdate(voice);
      },
      onError: (err, { gaveUp }) => {
        if (!gaveUp) return; // a blip while waiting is not worth a message; the next poll may work
        delete this.pollers[voiceId];
        this.onGiveUp(err);
      },
      firstDelayMs: FIRST_DELAY_MS,
      maxDelayMs: MAX_DELAY_MS,
      immediately: false, // the upload or the list has just told us the status
    });
  }

  stop(voiceId) {
    if (this.pollers[voiceId]) this.pollers[voiceId].stop();
    delete this.pollers[voiceId];
  }

  stopAll() {
    Object.keys(this.pollers).forEach((voiceId) => this.stop(voiceId));
  }
}

module.exports = { Reviews };
