/**
 * Plays a task's audio while it is being synthesised: the gateway's PCM stream (api.openSynthesisStream)
 * into a WebAudioContext, each piece as its own AudioBuffer scheduled right after the one before on
 * the audio clock. Scheduling by time, never from `onended`, leaves no gap between pieces (a gap of a
 * few milliseconds is heard as a click).
 *
 *   const stream = new StreamPlayer({ onStarted, onEnded, onFailed });
 *   if (streamingSupported()) stream.start(task); // task.stream_url
 *   stream.stop();    // the page hides, or the user plays something else: no event follows
 *   stream.destroy(); // the page goes away
 *
 * onStarted(): the first audio is scheduled. onEnded({receivedS}): the stream ended and everything it
 * brought has been played; `receivedS` is how much that was, which the caller compares with the
 * finished task's `duration_s` (a stream cut short, when a worker died mid-task, has less: the task's
 * `audio_url` has it all). onFailed(err): the stream broke (network, a refusal), after what it had
 * brought has been played. Exactly one of onEnded / onFailed follows each start() that is not stopped.
 */
const api = require('./api');

// How far ahead of the audio clock a piece is scheduled when nothing is queued (the first piece, or
// after the stream fell behind): room for the time between reading the clock and the piece starting,
// so its first samples are not skipped.
const LEAD_S = 0.1;
// A piece follows the queued ones back to back while they reach at least this far ahead of the clock.
// Less is too late to be sure to start on time: the piece then starts LEAD_S from now instead.
const MIN_AHEAD_S = 0.02;
// How often the end of playback is checked when the clock has not got there yet.
const END_CHECK_MIN_MS = 50;

/**
 * Whether this base library can stream: WebAudio (2.19.0+) and chunked requests (2.20.1+).
 * @returns {boolean}
 */
function streamingSupported() {
  return (
    wx.canIUse('createWebAudioContext') &&
    wx.canIUse('request.object.enableChunked') &&
    wx.canIUse('RequestTask.onChunkReceived') &&
    typeof wx.createWebAudioContext === 'function'
  );
}

/** s16le bytes to float samples, keeping a byte that ends a piece mid-sample for the next piece. */
class PcmDecoder {
  constructor() {
    /** @type {number | null} */
    this.carry = null;
  }

  /**
   * @param {ArrayBuffer} data
   * @returns {Float32Array}
   */
  decode(data) {
    let bytes = new Uint8Array(data);
    if (this.carry !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.carry;
      joined.set(bytes, 1);
      bytes = joined;
      this.carry = null;
    }
    const count = bytes.length >> 1;
    if (bytes.length % 2 === 1) this.carry = bytes[bytes.length - 1];
    const view = new DataView(bytes.buffer, bytes.byteOffset, count * 2);
    const samples = new Float32Array(count);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
    return samples;
  }
}

/**
 * @typedef {object} StreamEvents
 * @property {() => void} [onStarted]
 * @property {(result: {receivedS: number}) => void} [onEnded]
 * @property {(err: Error) => void} [onFailed]
 */

/**
 * One stream being played: what it scheduled and how far it got.
 * @typedef {object} Session
 * @property {{abort: () => void} | null} request
 * @property {number} rateHz 0 until the response says (and for a response without audio)
 * @property {PcmDecoder} decoder
 * @property {number} nextTime where on the audio clock the next piece starts
 * @property {{source: WechatMiniprogram.BufferSourceNode, endsAt: number}[]} scheduled
 * @property {number} samples
 * @property {boolean} started
 * @property {number | null} endTimer
 */

class StreamPlayer {
  /** @param {StreamEvents} events */
  constructor(events) {
    this.events = events || {};
    /** @type {WechatMiniprogram.WebAudioContext | null} */
    this.context = null;
    /** @type {Session | null} */
    this.session = null;
  }

  /** Whether a stream is being received or played. */
  get active() {
    return this.session !== null;
  }

  /**
   * Play the task's stream from its first sample; a stream already playing stops first.
   * @param {{stream_url: string}} task
   */
  start(task) {
    this.stop();
    const context = this.audioContext();
    if (context.state === 'suspended') context.resume().catch(() => {});
    /** @type {Session} */
    const session = {
      request: null,
      rateHz: 0,
      decoder: new PcmDecoder(),
      nextTime: 0,
      scheduled: [],
      samples: 0,
      started: false,
      endTimer: null,
    };
    this.session = session;
    session.request = api.openSynthesisStream(task, {
      start: ({ sampleRateHz }) => {
        if (this.session === session) session.rateHz = sampleRateHz || 0;
      },
      chunk: (data) => {
        if (this.session === session) this.schedule(session, data);
      },
      end: () => {
        if (this.session !== session) return;
        this.whenPlayed(session, () => this.finish({ receivedS: this.receivedS(session) }));
      },
      error: (err) => {
        if (this.session === session) this.whenPlayed(session, () => this.finish(null, err));
      },
    });
  }

  /** Stop receiving and playing now; no event follows. */
  stop() {
    const session = this.session;
    if (!session) return;
    this.session = null;
    if (session.endTimer !== null) clearTimeout(session.endTimer);
    if (session.request) session.request.abort();
    session.scheduled.forEach(({ source }) => {
      try {
        source.stop();
      } catch (err) {
        // already played out: nothing to stop
      }
    });
  }

  destroy() {
    this.stop();
    if (this.context) this.context.close().catch(() => {});
    this.context = null;
  }

  /** @returns {WechatMiniprogram.WebAudioContext} */
  audioContext() {
    if (!this.context) this.context = wx.createWebAudioContext();
    return this.context;
  }

  /**
   * One piece of the stream as an AudioBuffer, scheduled where the previous one ends (or just ahead
   * of the clock, when the stream fell behind and everything queued has played). Never from the
   * previous piece's `onended`: that fires late, and the gap between the two is heard as a click.
   * @param {Session} session
   * @param {ArrayBuffer} data
   */
  schedule(session, data) {
    if (!session.rateHz) return; // a response without audio (a failed task): nothing to play
    const samples = session.decoder.decode(data);
    if (!samples.length) return;
    const context = this.audioContext();
    const buffer = context.createBuffer(1, samples.length, session.rateHz);
    if (typeof buffer.copyToChannel === 'function') {
      buffer.copyToChannel(samples, 0, 0);
    } else {
      buffer.getChannelData(0).set(samples);
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    const now = context.currentTime;
    if (session.nextTime < now + MIN_AHEAD_S) session.nextTime = now + LEAD_S; // ran dry: start afresh
    source.start(session.nextTime);
    session.nextTime += buffer.duration;
    session.scheduled = session.scheduled.filter((s) => s.endsAt > now); // forget what has played
    session.scheduled.push({ source, endsAt: session.nextTime });
    session.samples += samples.length;
    if (!session.started) {
      session.started = true;
      if (this.events.onStarted) this.events.onStarted();
    }
  }

  /**
   * @param {Session} session
   * @returns {number}
   */
  receivedS(session) {
    return session.rateHz ? session.samples / session.rateHz : 0;
  }

  /**
   * Run `then` once the audio clock has passed the end of everything scheduled.
   * @param {Session} session
   * @param {() => void} then
   */
  whenPlayed(session, then) {
    session.request = null;
    const check = () => {
      session.endTimer = null;
      if (this.session !== session) return;
      const leftS = session.nextTime - (this.context ? this.context.currentTime : 0);
      if (!session.started || leftS <= 0) {
        then();
        return;
      }
      session.endTimer = setTimeout(check, Math.max(END_CHECK_MIN_MS, Math.ceil(leftS * 1000)));
    };
    check();
  }

  /**
   * @param {{receivedS: number} | null} result
   * @param {Error} [err]
   */
  finish(result, err) {
    this.session = null;
    if (result && this.events.onEnded) this.events.onEnded(result);
    if (!result && this.events.onFailed) this.events.onFailed(err);
  }
}

module.exports = { StreamPlayer, PcmDecoder, streamingSupported };
