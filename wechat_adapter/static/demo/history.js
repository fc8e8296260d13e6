// Panel 4: the user's recent syntheses, newest first; finished ones can be played again.
import { $, TASK_STATUS } from "./dom.js";

const HISTORY_LIMIT = 10;

export class HistoryPanel {
  /** `onPlay(task)` plays a finished task's audio. */
  constructor(api, { report, onPlay }) {
    this.api = api;
    this.report = report;
    this.onPlay = onPlay;
    this.message = $("history-message");
    $("refresh-history").addEventListener("click", () =>
      this.load().catch((e) => this.report(this.message, e)),
    );
  }

  async load() {
    const { tasks } = await this.api.tasks(HISTORY_LIMIT);
    $("history").replaceChildren(...tasks.map((task) => this.#item(task)));
    this.message.textContent = tasks.length ? "" : "还没有合成记录。";
  }

  clear() {
    $("history").replaceChildren();
  }

  #item(task) {
    const item = document.createElement("li");
    item.dataset.task = task.task_id;
    const text = document.createElement("span");
    text.className = "history-text";
    text.textContent = task.text;
    const status = document.createElement("span");
    status.className = "history-status";
    const when = new Date(task.created_at).toLocaleString("zh-CN");
    status.textContent = `${TASK_STATUS[task.status] ?? task.status} · ${when}`;
    item.append(text, status);
    if (task.status === "succeeded") {
      const play = document.createElement("button");
      play.type = "button";
      play.textContent = "播放";
      play.setAttribute("aria-label", `播放：${task.text}`);
      play.addEventListener("click", () => this.onPlay(task));
      item.append(play);
    } else if (task.error) {
      const reason = document.createElement("span");
      reason.className = "error";
      reason.textContent = task.error.message;
      item.append(reason);
    }
    return item;
  }
}
