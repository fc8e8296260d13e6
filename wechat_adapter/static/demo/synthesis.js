// Panel 3: style, speed and text; submit; follow progress over SSE; hear the result while it is
// synthesised (stream.js), then listen and compare A/B.
import { isFinal } from "./api.js";
import { $, TASK_STATUS, option, randomHex, say } from "./dom.js";
import { StreamPlayer, streamingSupported } from "./stream.js";

const PRESET_GROUPS = { dialect: "方言", emotion: "情感", speed: "语速", volume: "音量" };
// A stream this much shorter than the finished file was cut short (a worker died mid-task): the file
// plays instead. Both hold the same samples, the stored duration rounded to milliseconds.
const CUT_SHORT_TOLERANCE_S = 0.25;

/** Roughly what the server counts: NFC, whitespace folded, in code points. */
const countChars = (text) => [...text.normalize("NFC").replace(/\s+/g, " ").trim()].length;

export class SynthesisPanel {
  /** `onFinished(task)` hears of every task that reached a final status. */
  constructor(api, { textMaxChars, report, onFinished }) {
    this.api = api;
    this.textMaxChars = textMaxChars;
    this.report = report;
    this.onFinished = onFinished;
    this.voice = null;
    // One key per draft: a double tap or a retry after a lost reply names the same task, while any
    // change to the request makes a new one.
    this.draftKey = null;
    this.following = null; // AbortController of the stream being read
    this.lastShown = null; // "task:status" last added to the progress log
    this.lastStatus = null; // the newest status the page has seen of the task it follows
    this.stream = new StreamPlayer();
    this.autoplayOf = null; // the task whose audio plays by itself, until the user plays something
    this.message = $("synth-message");
    const form = $("synth-form");
    form.addEventListener("input", () => {
      this.draftKey = null;
      this.#refreshForm();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    $("play-result").addEventListener("click", () => this.playResult());
    $("play-original").addEventListener("click", () => {
      this.#takeOver();
      this.#play($("original-audio"), $("result-audio"));
    });
    $("stop-stream").addEventListener("click", () => this.#takeOver());
    // The audio controls are the user's too: using them ends autoplay.
    for (const id of ["result-audio", "original-audio"]) {
      $(id).addEventListener("play", () => this.autoplayOf === null || this.#takeOver());
    }
    this.#refreshForm();
  }

  async loadPresets() {
    const { presets } = await this.api.presets();
    const select = $("preset");
    select.replaceChildren(option("", "原声（不加风格）"));
    for (const [kind, label] of Object.entries(PRESET_GROUPS)) {
      const group = document.createElement("optgroup");
      group.label = label;
      group.append(...presets.filter((p) => p.kind === kind).map((p) => option(p.id, p.name)));
      if (group.children.length) select.append(group);
    }
  }

  /** The voice to synthesise with; its sample is side A of the comparison. */
  setVoice(voice) {
    this.voice = voice;
    this.draftKey = null;
    const original = $("original-audio");
    if (voice?.audio_url && original.getAttribute("src") !== voice.audio_url) original.src = voice.audio_url;
  }

  /** Put a finished task's audio in player B (from a submission or from the history). */
  showResult(task) {
    const result = $("result-audio");
    if (result.getAttribute("src") !== task.audio_url) result.src = task.audio_url;
    $("players").hidden = false;
  }

  /** Forget the last task and the players' audio (signed out, or the account erased). */
  reset() {
    this.following?.abort();
    this.#takeOver();
    this.setVoice(null);
    for (const id of ["result-audio", "original-audio"]) {
      $(id).pause();
      $(id).removeAttribute("src");
    }
    $("players").hidden = true;
    $("progress-log").replaceChildren();
    $("task-status").textContent = "";
    say(this.message, "");
  }

  playResult() {
    this.#takeOver();
    this.#play($("result-audio"), $("original-audio"));
  }

  /** The user plays, stops or submits something: the stream stops and nothing plays by itself. */
  #takeOver() {
    this.autoplayOf = null;
    this.stream.stop();
  }

  #refreshForm() {
    $("speed-value").value = Number($("speed").value).toFixed(1);
    const count = countChars($("text").value);
    const over = count > this.textMaxChars;
    const counter = $("text-count");
    counter.textContent = over
      ? `${count} / ${this.textMaxChars}，超出 ${count - this.textMaxChars} 字`
      : `${count} / ${this.textMaxChars}`;
    counter.classList.toggle("error", over);
    $("text").setAttribute("aria-invalid", String(over));
    $("synthesize").disabled = over;
  }

  #fields() {
    const fields = { text: $("text").value, voice_id: this.voice?.voice_id ?? "", format: "mp3" };
    fields.speed = Number($("speed").value);
    const preset = $("preset").value;
    if (preset) Object.assign(fields, { mode: "instruct", instruct: preset });
    return fields;
  }

  async #submit() {
    if (!this.voice) {
      say(this.message, "请先录制并上传一段声音。", { error: true });
      return;
    }
    this.following?.abort();
    this.#takeOver();
    if (streamingSupported()) this.stream.prepare(); // in the click: the AudioContext may start
    this.draftKey ??= randomHex(16);
    const button = $("synthesize");
    button.disabled = true;
    $("progress-log").replaceChildren();
    this.lastShown = null;
    say(this.message, "已提交…");
    try {
      let task = await this.api.synthesize(this.#fields(), this.draftKey);
      this.#progress(task);
      let finished = Promise.resolve(task);
      if (!isFinal(task.status)) {
        this.following = new AbortController();
        finished = this.api.followTask(task.task_id, (t) => this.#progress(t), this.following.signal);
      }
      this.#autoplay(task, finished);
      task = await finished;
      this.#finished(task);
    } catch (error) {
      if (error.name !== "AbortError") this.report(this.message, error);
    } finally {
      button.disabled = false;
      this.#refreshForm();
    }
  }

  /**
   * Play the task's audio by itself: from its stream while it is synthesised, else (no streaming in
   * this browser, the stream failed, or it came short of the finished file) the file once the task
   * has succeeded. `finished` is the task's final state. Until the user plays or stops something.
   */
  async #autoplay(task, finished) {
    this.autoplayOf = task.task_id;
    const shown = $("now-playing");
    for (const key of Object.keys(shown.dataset)) delete shown.dataset[key];
    let receivedS = null;
    if (!isFinal(task.status) && streamingSupported()) {
      try {
        ({ receivedS } = await this.stream.play(task, { onStarted: () => this.#streamStarted() }));
        shown.dataset.receivedS = String(receivedS);
      } catch (error) {
        if (error.name === "AbortError") return; // the user took over, or another task did
        shown.dataset.streamError = error.message;
      } finally {
        shown.hidden = true;
      }
    }
    const done = await finished.catch(() => null);
    if (this.autoplayOf !== task.task_id || done?.status !== "succeeded") return;
    this.autoplayOf = null;
    const whole = receivedS !== null && receivedS >= done.duration_s - CUT_SHORT_TOLERANCE_S;
    shown.dataset.outcome = whole ? "streamed" : "file";
    if (whole) return;
    this.showResult(done);
    this.#play($("result-audio"), $("original-audio"));
  }

  /** The first audio is scheduled: say so, and note when (what the browser test measures). */
  #streamStarted() {
    const shown = $("now-playing");
    shown.dataset.firstAudioAt = String(Date.now());
    shown.dataset.statusAtFirstAudio = this.lastStatus ?? "";
    shown.hidden = false;
  }

  #progress(task) {
    this.lastStatus = task.status;
    const shown = `${task.task_id}:${task.status}`;
    if (shown === this.lastShown) return;
    this.lastShown = shown;
    const status = $("task-status");
    status.dataset.status = task.status;
    if (task.status === "succeeded") status.dataset.updatedAt = task.updated_at;
    status.textContent = `合成状态：${TASK_STATUS[task.status] ?? task.status}`;
    const step = document.createElement("li");
    step.dataset.status = task.status;
    step.textContent = `${new Date().toLocaleTimeString("zh-CN")} ${TASK_STATUS[task.status] ?? task.status}`;
    $("progress-log").append(step);
  }

  #finished(task) {
    if (task.status === "succeeded") {
      this.showResult(task);
      say(this.message, `合成完成（${task.duration_s} 秒），点“播放合成”试听，和原声对比。`);
    } else {
      say(this.message, task.error?.message ?? `合成${TASK_STATUS[task.status] ?? task.status}`, {
        error: true,
      });
    }
    this.onFinished(task);
  }

  async #play(audio, other) {
    other.pause();
    audio.currentTime = 0;
    try {
      await audio.play();
    } catch (error) {
      say(this.message, `无法播放：${error.message}`, { error: true });
    }
  }
}
