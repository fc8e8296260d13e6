// The result while it is being synthesised: the task's PCM stream (GET stream_url&format=pcm, s16le
// mono at X-Audio-Sample-Rate) read with fetch() as it arrives, each piece an AudioBuffer scheduled
// right after the one before on the AudioContext's clock, as the mini program does
// (miniprogram/utils/stream_player.js). Scheduling by time, never from `onended`, leaves no gap
// between pieces (a gap of a few milliseconds is heard as a click).

// How far ahead of the audio clock a piece starts when nothing is queued (the first piece, or after
// the stream fell behind), so its first samples are not skipped.
const LEAD_S = 0.1;
// A piece follows the queued ones back to back while they reach at least this far ahead of the clock.
const MIN_AHEAD_S = 0.02;

export const streamingSupported = () =>
  typeof AudioContext === "function" && typeof ReadableStream === "function" && "body" in Response.prototype;

const aborted = () => new DOMException("the stream was stopped", "AbortError");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** s16le bytes to float samples, keeping a byte that ends a piece mid-sample for the next one. */
export class PcmDecoder {
  carry = null;

  decode(chunk) {
    let bytes = chunk;
    if (this.carry !== null) {
      bytes = new Uint8Array(chunk.length + 1);
      bytes[0] = this.carry;
      bytes.set(chunk, 1);
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

export class StreamPlayer {
  context = null;
  session = null;

  /** Make or wake the AudioContext: call it from the user's click, as browsers' autoplay rules ask. */
  prepare() {
    this.context ??= new AudioContext();
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
  }

  get active() {
    return this.session !== null;
  }

  /**
   * Play the task's stream from its first sample. Resolves once it has ended and everything it
   * brought has played, to `{receivedS}` (less than the finished task's `duration_s` when it was cut
   * short: a worker died mid-task); rejects when it fails, with an AbortError when stopped.
   * `onStarted()` hears of the first piece scheduled.
   */
  async play(task, { onStarted = () => {} } = {}) {
    this.stop();
    this.prepare();
    const session = {
      controller: new AbortController(),
      decoder: new PcmDecoder(),
      sources: [],
      nextTime: 0,
      samples: 0,
      rateHz: 0,
    };
    this.session = session;
    const response = await fetch(`${task.stream_url}&format=pcm`, {
      signal: session.controller.signal,
      cache: "no-store",
    });
    if (!response.ok) throw new Error(`音频流请求失败（HTTP ${response.status}）`);
    const rateHz = Number.parseInt(response.headers.get("X-Audio-Sample-Rate") ?? "", 10);
    if (!(rateHz > 0)) {
      // No audio: the task failed (the body is empty), or a cross-origin gateway hid the header.
      await response.body?.cancel();
      return { receivedS: 0 };
    }
    session.rateHz = rateHz;
    const reader = response.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (this.session !== session) throw aborted();
      if (done) break;
      if (this.#schedule(session, value) && session.sources.length === 1) onStarted();
    }
    await this.#played(session);
    this.session = null;
    return { receivedS: session.samples / rateHz };
  }

  /** Stop receiving and playing now; the pending play() rejects with an AbortError. */
  stop() {
    const session = this.session;
    if (!session) return;
    this.session = null;
    session.controller.abort();
    for (const source of session.sources) {
      try {
        source.stop();
      } catch {
        // never started: nothing to stop
      }
    }
  }

  /** One piece as an AudioBuffer, where the queued ones end (or just ahead, when they ran out). */
  #schedule(session, chunk) {
    const samples = session.decoder.decode(chunk);
    if (!samples.length) return false;
    const buffer = this.context.createBuffer(1, samples.length, session.rateHz);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const now = this.context.currentTime;
    if (session.nextTime < now + MIN_AHEAD_S) session.nextTime = now + LEAD_S; // ran dry: start afresh
    source.start(session.nextTime);
    session.nextTime += buffer.duration;
    session.sources.push(source);
    session.samples += samples.length;
    return true;
  }

  async #played(session) {
    for (;;) {
      if (this.session !== session) throw aborted();
      const leftS = session.nextTime - this.context.currentTime;
      if (!session.sources.length || leftS <= 0) return;
      await sleep(Math.max(50, leftS * 1000));
    }
  }
}
