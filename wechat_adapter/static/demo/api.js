// The gateway's HTTP API (its /openapi.json), as the mini program uses it.
import { readEventStream } from "./sse.js";

const FINAL_STATUSES = new Set(["succeeded", "failed", "rejected"]);
const RECONNECT_DELAY_MS = 1000;
const MAX_RECONNECTS = 30;

export const isFinal = (status) => FINAL_STATUSES.has(status);

/** A failed call; `message` is the API's own (zh-CN, fit to show as is). */
export class ApiError extends Error {
  constructor(status, code, message, retryAfterS = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterS = retryAfterS;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Api {
  constructor() {
    this.token = null;
  }

  async #fetch(method, path, { json, body, headers = {}, signal } = {}) {
    const init = { method, headers: { ...headers }, signal };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "网络连接失败，请检查网络后重试");
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async #json(method, path, options) {
    const response = await this.#fetch(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  login(code) {
    return this.#json("POST", "/v1/session", { json: { code } });
  }

  /** The right to erasure: every voice, task and audio of the user goes, and every token of theirs. */
  eraseMe() {
    return this.#json("DELETE", "/v1/me");
  }

  /** Multipart, as wx.uploadFile sends it; `consent`: "self" or "authorized" (required). */
  uploadVoice(blob, filename, promptText, name, consent) {
    const form = new FormData();
    form.append("file", blob, filename);
    form.append("prompt_text", promptText);
    form.append("name", name);
    form.append("consent", consent);
    return this.#json("POST", "/v1/voices", { body: form });
  }

  voices() {
    return this.#json("GET", "/v1/voices");
  }

  voice(voiceId) {
    return this.#json("GET", `/v1/voices/${encodeURIComponent(voiceId)}`);
  }

  presets() {
    return this.#json("GET", "/v1/presets");
  }

  synthesize(fields, idempotencyKey) {
    return this.#json("POST", "/v1/syntheses", {
      json: fields,
      headers: { "Idempotency-Key": idempotencyKey },
    });
  }

  task(taskId) {
    return this.#json("GET", `/v1/syntheses/${encodeURIComponent(taskId)}`);
  }

  tasks(limit = 10) {
    return this.#json("GET", `/v1/syntheses?limit=${limit}`);
  }

  /**
   * Follow a task over server-sent events until a final status; `onStatus(task)` sees each change.
   * A dropped stream is reopened (after asking for the task once, in case it finished meanwhile).
   */
  async followTask(taskId, onStatus, signal) {
    const path = `/v1/syntheses/${encodeURIComponent(taskId)}/events`;
    for (let attempt = 0; attempt <= MAX_RECONNECTS; attempt++) {
      try {
        const response = await this.#fetch("GET", path, { headers: { Accept: "text/event-stream" }, signal });
        for await (const { event, data } of readEventStream(response)) {
          if (event !== "status") continue;
          const task = JSON.parse(data);
          onStatus(task);
          if (isFinal(task.status)) return task;
        }
      } catch (error) {
        if (error.name === "AbortError" || (error instanceof ApiError && error.status !== 0)) throw error;
      }
      const task = await this.task(taskId);
      if (isFinal(task.status)) {
        onStatus(task);
        return task;
      }
      await sleep(RECONNECT_DELAY_MS);
    }
    throw new ApiError(0, "network", "与服务器的连接不稳定，请稍后在历史记录中查看结果");
  }
}

async function errorOf(response) {
  const body = await response.json().catch(() => null);
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  const error = body && body.error;
  return new ApiError(
    response.status,
    error?.code ?? `http_${response.status}`,
    error?.message ?? `请求失败（HTTP ${response.status}）`,
    Number.isFinite(retryAfter) ? retryAfter : null,
  );
}
