// Panel 2: record (or pick) a sample reading a shown sentence, upload it, follow its review.
import { $, VOICE_STATUS, option, say } from "./dom.js";
import { fileNameFor, startRecording, whyNoRecording } from "./recorder.js";

// Read aloud in 5–10 s; the sentence becomes the voice's prompt_text (its transcript). The first is
// itself the speaker's consent statement (《深度合成管理规定》第十四条), as in the mini program.
const SENTENCES = [
  "我是本人，同意用我的声音生成语音。今天天气很好，我们一起去公园散步吧。",
  "今天天气很好，我们一起去公园散步吧。我喜欢听音乐，也喜欢看书。",
  "春天来了，小河边的柳树发芽了，远处传来孩子们的笑声。",
  "请把窗户打开一点，让新鲜的空气进来，我们再接着聊。",
  "这家小店的面条很好吃，每天早上门口都排着长队。",
];
const MAX_RECORD_S = 10;
const POLL_FIRST_MS = 300;
const POLL_MAX_MS = 5000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class VoicePanel {
  /** `onSelect(voice|null)` hears of the voice to use; `report(element, error)` shows failures. */
  constructor(api, { onSelect, report }) {
    this.api = api;
    this.onSelect = onSelect;
    this.report = report;
    this.voices = new Map();
    this.sentence = 0;
    this.recording = null;
    this.take = null; // {blob, fileName, url}
    this.watching = 0; // bumped to stop an older review poll
    this.message = $("voice-message");
    this.#showSentence();
    this.#offerRecording();
    $("next-sentence").addEventListener("click", () => this.#nextSentence());
    $("record").addEventListener("click", () => this.#toggleRecording());
    $("sample-file").addEventListener("change", (event) => this.#pickFile(event.target.files[0]));
    $("upload").addEventListener("click", () => this.#upload());
    $("consent").addEventListener("change", () => this.#consentChanged());
    $("voice-select").addEventListener("change", () => this.#selectionChanged());
  }

  get selected() {
    return this.voices.get($("voice-select").value) ?? null;
  }

  async load() {
    const { voices } = await this.api.voices();
    this.voices = new Map(voices.map((voice) => [voice.voice_id, voice]));
    const usable = voices.find((voice) => voice.status === "ready") ?? voices[0];
    this.#render(usable?.voice_id ?? "");
  }

  reset() {
    this.watching++;
    this.voices.clear();
    this.#render("");
  }

  /** "self" or "authorized" once the user has confirmed the speaker's consent; "" before. */
  get #consent() {
    return document.querySelector('input[name="consent"]:checked')?.value ?? "";
  }

  #consentChanged() {
    $("upload").disabled = !this.#consent;
    $("consent-hint").hidden = Boolean(this.#consent);
  }

  #showSentence() {
    $("prompt-text").textContent = SENTENCES[this.sentence];
  }

  #nextSentence() {
    this.sentence = (this.sentence + 1) % SENTENCES.length;
    this.#showSentence();
  }

  #offerRecording() {
    const reason = whyNoRecording();
    $("recorder").hidden = reason !== null;
    $("file-fallback").hidden = reason === null;
    if (reason) $("file-reason").textContent = `${reason}可以改为上传一段录音文件。`;
  }

  async #toggleRecording() {
    if (this.recording) {
      this.recording.stop();
      return;
    }
    const button = $("record");
    try {
      this.recording = await startRecording({
        maxSeconds: MAX_RECORD_S,
        onTick: (seconds) => ($("record-time").textContent = `${seconds.toFixed(1)} 秒`),
      });
    } catch (error) {
      const denied = error.name === "NotAllowedError";
      const reason = denied ? "没有得到麦克风权限，请在浏览器设置里允许后重试" : error.message || error.name;
      say(this.message, `无法使用麦克风：${reason}`, { error: true });
      return;
    }
    button.textContent = "停止录音";
    button.classList.add("recording");
    say(this.message, `录音中，请读出上面的句子（最长 ${MAX_RECORD_S} 秒）…`);
    try {
      const blob = await this.recording.done;
      this.#setTake(blob, fileNameFor(blob.type));
      say(this.message, `录好了（${$("record-time").textContent}），可以试听后上传。`);
    } catch (error) {
      say(this.message, `录音失败：${error.message}`, { error: true });
    } finally {
      this.recording = null;
      button.textContent = "重新录音";
      button.classList.remove("recording");
    }
  }

  #pickFile(file) {
    if (file) this.#setTake(file, file.name);
  }

  #setTake(blob, fileName) {
    if (this.take) URL.revokeObjectURL(this.take.url);
    this.take = { blob, fileName, url: URL.createObjectURL(blob) };
    $("take-audio").src = this.take.url;
    Object.assign($("take").dataset, { type: blob.type, bytes: String(blob.size) });
    $("take").hidden = false;
  }

  async #upload() {
    if (!this.take) return;
    const consent = this.#consent;
    if (!consent) {
      say(this.message, "请先确认已获得声音主人的同意", { error: true });
      return;
    }
    const button = $("upload");
    button.disabled = true;
    say(this.message, "上传中…");
    try {
      const promptText = $("prompt-text").textContent;
      const voice = await this.api.uploadVoice(
        this.take.blob,
        this.take.fileName,
        promptText,
        $("voice-name").value,
        consent,
      );
      // The next voice may be someone else's: ask again.
      document.querySelectorAll('input[name="consent"]').forEach((input) => (input.checked = false));
      this.voices.set(voice.voice_id, voice);
      this.#render(voice.voice_id);
      say(this.message, `上传成功（${voice.duration_s} 秒）。`);
    } catch (error) {
      this.report(this.message, error);
    } finally {
      this.#consentChanged();
    }
  }

  #render(selectedId) {
    const select = $("voice-select");
    select.replaceChildren();
    if (this.voices.size === 0) select.append(option("", "（还没有声音，请先录一段）"));
    for (const voice of this.voices.values()) {
      const status =
        { pending_review: "审核中", ready: "可用", rejected: "未通过" }[voice.status] ?? voice.status;
      select.append(option(voice.voice_id, `${voice.name} · ${voice.duration_s} 秒 · ${status}`));
    }
    select.value = selectedId;
    this.#selectionChanged();
  }

  #selectionChanged() {
    const voice = this.selected;
    const status = $("voice-status");
    status.dataset.status = voice?.status ?? "";
    status.textContent = voice ? `声音状态：${VOICE_STATUS[voice.status] ?? voice.status}` : "";
    this.onSelect(voice);
    if (voice?.status === "pending_review") this.#watchReview(voice.voice_id);
  }

  /** Poll the voice until WeChat's audio review decides it (seconds with the emulator, up to 30 min live). */
  async #watchReview(voiceId) {
    const generation = ++this.watching;
    let delayMs = POLL_FIRST_MS;
    for (;;) {
      await sleep(delayMs);
      if (generation !== this.watching) return;
      let voice;
      try {
        voice = await this.api.voice(voiceId);
      } catch (error) {
        this.report(this.message, error);
        return;
      }
      if (generation !== this.watching) return;
      if (voice.status !== "pending_review") {
        this.voices.set(voiceId, voice);
        this.#render($("voice-select").value);
        return;
      }
      delayMs = Math.min(delayMs * 1.5, POLL_MAX_MS);
    }
  }
}
