// Small DOM helpers shared by the page's panels. Text goes in with textContent, never as HTML.

export const $ = (id) => document.getElementById(id);

/** Show `text` in a status element (an aria-live region); errors are styled as such. */
export function say(element, text, { error = false } = {}) {
  element.textContent = text;
  element.classList.toggle("error", error);
}

/** The message to show for a failed call: the API's own, with the wait it asks for. */
export function describeError(error) {
  if (error?.retryAfterS) return `${error.message}（${error.retryAfterS} 秒后可重试）`;
  return error?.message || "出错了，请稍后再试";
}

/** Hex from the browser's CSPRNG (crypto.randomUUID needs HTTPS; this does not). */
export function randomHex(bytes) {
  const values = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(values, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  return element;
}

export const VOICE_STATUS = {
  pending_review: "审核中：等待微信的音频审核结果…",
  ready: "可以使用",
  rejected: "未通过审核，请换一段录音",
};

export const TASK_STATUS = {
  queued: "排队中",
  awaiting_review: "等待声音审核",
  running: "合成中",
  succeeded: "完成",
  failed: "失败",
  rejected: "未通过审核",
};
