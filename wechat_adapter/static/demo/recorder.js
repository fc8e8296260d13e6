// Recording a voice sample with MediaRecorder.

// Opus in WebM where the browser has it (Chromium, Firefox); AAC in MP4 on iOS Safari.
const MIME_PREFERENCE = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
const FILE_NAMES = [
  ["audio/webm", "sample.webm"],
  ["audio/ogg", "sample.ogg"],
  ["audio/mp4", "sample.m4a"],
];
const TICK_MS = 100;

/** Why this page cannot record here, or null when it can. */
export function whyNoRecording() {
  if (!window.isSecureContext) {
    return "浏览器只允许在 HTTPS 或本机地址（127.0.0.1 / localhost）的页面上使用麦克风。";
  }
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    return "这个浏览器不支持网页录音。";
  }
  return null;
}

/** A file name whose extension matches the recording's container (the server decodes by content). */
export function fileNameFor(mimeType) {
  return FILE_NAMES.find(([prefix]) => mimeType.startsWith(prefix))?.[1] ?? "sample.audio";
}

/**
 * Start recording from the microphone. Returns {stop(), done}: `done` resolves to the recording
 * as a Blob once stopped, by stop() or after `maxSeconds`. `onTick(seconds)` reports progress.
 */
export async function startRecording({ maxSeconds, onTick }) {
  // Call-style processing (echo cancellation, noise suppression, gain riding) changes the timbre
  // the model is meant to copy: ask for the plain signal. The gateway keeps samples at 24 kHz, so
  // ask for the microphone's usual 48 kHz (a hint, never a requirement that could fail): nothing
  // below 24 kHz, and Opus records at 48 kHz anyway.
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: {
      echoCancellation: false,
      noiseSuppression: false,
      autoGainControl: false,
      channelCount: 1,
      sampleRate: { ideal: 48000 },
    },
  });
  const mimeType = MIME_PREFERENCE.find((type) => MediaRecorder.isTypeSupported(type));
  const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
  const chunks = [];
  const startedAt = performance.now();
  let timer = null;
  const done = new Promise((resolve, reject) => {
    recorder.addEventListener("dataavailable", (event) => event.data.size && chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      clearInterval(timer);
      stream.getTracks().forEach((track) => track.stop());
      resolve(new Blob(chunks, { type: recorder.mimeType || mimeType || "" }));
    });
    recorder.addEventListener("error", (event) => reject(event.error ?? new Error("recording failed")));
  });
  const stop = () => recorder.state !== "inactive" && recorder.stop();
  timer = setInterval(() => {
    const seconds = (performance.now() - startedAt) / 1000;
    onTick(seconds);
    if (seconds >= maxSeconds) stop();
  }, TICK_MS);
  recorder.start();
  return { stop, done };
}
