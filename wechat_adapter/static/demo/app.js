// The H5 demo page: login, then the voice, synthesis and history panels.
import { Api } from "./api.js";
import { $, describeError, randomHex, say } from "./dom.js";
import { HistoryPanel } from "./history.js";
import { SynthesisPanel } from "./synthesis.js";
import { VoicePanel } from "./voices.js";

const SESSION_KEY = "voicerelay.session"; // sessionStorage: the tab keeps its login over a reload
const DEV_USER_KEY = "voicerelay.devUser"; // localStorage: the same test user on the next visit
const PANELS = ["voice-section", "synth-section", "history-section"];
const ERASE_CONFIRM = "将永久删除你上传的所有声音样本、合成记录和音频，且无法恢复。确定删除吗？";
const ERASED = "已删除你的全部数据。";

class DemoPage {
  constructor(config) {
    this.api = new Api();
    this.loginMessage = $("login-message");
    const report = (element, error) => this.report(element, error);
    this.synthesis = new SynthesisPanel(this.api, {
      textMaxChars: config.text_max_chars,
      report,
      onFinished: () => this.history.load().catch((error) => report($("history-message"), error)),
    });
    this.voices = new VoicePanel(this.api, { report, onSelect: (voice) => this.synthesis.setVoice(voice) });
    this.history = new HistoryPanel(this.api, {
      report,
      onPlay: (task) => {
        this.synthesis.showResult(task);
        this.synthesis.playResult();
      },
    });
    this.devLogin = config.dev_login;
    this.#offerLogin();
    $("logout").addEventListener("click", () => this.signOut("已退出。", { error: false }));
    $("erase-account").addEventListener("click", () => this.eraseAccount());
  }

  /** Show a failure's API message; an expired session sends the user back to the login. */
  report(element, error) {
    if (error?.status === 401) {
      this.signOut(describeError(error));
      return;
    }
    say(element, describeError(error), { error: true });
  }

  #offerLogin() {
    $("login-form").hidden = !this.devLogin;
    $("no-dev-login").hidden = this.devLogin;
    if (!this.devLogin) return;
    const user = $("dev-user");
    user.value = localStorage.getItem(DEV_USER_KEY) || `h5-${randomHex(4)}`;
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.#logInAs(user.value.trim());
    });
  }

  /** The emulator maps a code's part before ":" to a user, so each login needs a fresh suffix only. */
  async #logInAs(user) {
    const button = $("login-form").querySelector("button");
    button.disabled = true;
    say(this.loginMessage, "登录中…");
    try {
      const session = await this.api.login(`${user}:${randomHex(8)}`);
      localStorage.setItem(DEV_USER_KEY, user);
      const expiresAt = Date.now() + session.expires_in * 1000;
      sessionStorage.setItem(
        SESSION_KEY,
        JSON.stringify({ token: session.token, openid: session.openid, expiresAt }),
      );
      await this.signIn(session);
    } catch (error) {
      this.report(this.loginMessage, error);
    } finally {
      button.disabled = false;
    }
  }

  async restore() {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved && saved.expiresAt > Date.now()) await this.signIn(saved);
  }

  async signIn({ token, openid }) {
    this.api.token = token;
    $("openid").textContent = openid;
    $("signed-in").hidden = false;
    $("login-form").hidden = true;
    say(this.loginMessage, "");
    PANELS.forEach((id) => ($(id).hidden = false));
    const loads = [this.voices.load(), this.synthesis.loadPresets(), this.history.load()];
    const messages = [$("voice-message"), $("synth-message"), $("history-message")];
    const results = await Promise.allSettled(loads);
    results.forEach((result, i) => result.status === "rejected" && this.report(messages[i], result.reason));
  }

  signOut(message, { error = true } = {}) {
    this.api.token = null;
    sessionStorage.removeItem(SESSION_KEY);
    PANELS.forEach((id) => ($(id).hidden = true));
    this.voices.reset();
    this.synthesis.reset();
    this.history.clear();
    $("signed-in").hidden = true;
    $("login-form").hidden = !this.devLogin;
    say(this.loginMessage, message, { error });
  }

  /**
   * The right to erasure (DELETE /v1/me, a few seconds), after a confirm(). The token is dead then,
   * so the page forgets it and, with the dev login, logs in again as the same user: an empty account.
   */
  async eraseAccount() {
    if (!confirm(ERASE_CONFIRM)) return;
    const button = $("erase-account");
    button.disabled = true;
    say(this.loginMessage, "正在删除…");
    try {
      await this.api.eraseMe();
    } catch (error) {
      this.report(this.loginMessage, error);
      return;
    } finally {
      button.disabled = false;
    }
    this.signOut(ERASED, { error: false });
    const user = $("dev-user").value.trim();
    if (!this.devLogin || !user) return;
    await this.#logInAs(user);
    if (this.api.token) say(this.loginMessage, `${ERASED}重新登录后是一个空账号。`);
  }
}

async function main() {
  let config;
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch (error) {
    say($("login-message"), `无法读取页面配置：${error.message}`, { error: true });
    return;
  }
  await new DemoPage(config).restore();
}

main();
