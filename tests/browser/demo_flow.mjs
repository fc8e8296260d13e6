// Drives the H5 demo page through the whole flow in headless Chromium with a fake microphone:
// dev login, record, upload, wait for review, synthesise, follow SSE while the result plays from its
// PCM stream (Web Audio), play the result, A/B.
// Then the page at a phone's size and basic accessibility. Run by tests/test_browser.py.
//
// Environment: DEMO_URL (the page), CHROMIUM_PATH, FAKE_AUDIO_WAV (what the microphone hears),
// ARTIFACTS_DIR (screenshots on failure), RECORD_SECONDS (optional).
// Exit status: 0 passed, 1 failed (screenshot and page dump in ARTIFACTS_DIR), 3 Chromium would not start.
// stdout ends with one JSON line: {"ok", "steps": [{name, seconds}], ...}.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const EXIT_FAILED = 1;
const EXIT_NO_BROWSER = 3;
const PHONE = { width: 375, height: 667 };
// A new voice's first synthesis includes the worker's analysis of the sample (a minute on a busy CPU).
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || "120000");
const PLAYED_S = 0.3;
const LOGIN_ERROR_STEP = "login-error-shows-api-message"; // how far playback must get to count as played

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const demoUrl = required("DEMO_URL");
const artifacts = required("ARTIFACTS_DIR");
const recordSeconds = Number(process.env.RECORD_SECONDS || "6.5");
// Playwright adds --headless and a fresh temporary --user-data-dir itself (and refuses the latter).
const chromiumArgs = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  `--use-file-for-fake-audio-capture=${required("FAKE_AUDIO_WAV")}`,
  "--autoplay-policy=no-user-gesture-required",
];

const report = { ok: false, steps: [], console: [], sse_responses: 0, pcm_streams: 0 };
// How long the page may take to hear the stream out once the task has succeeded (its last pieces).
const STREAM_END_TIMEOUT_MS = 30_000;
const started = performance.now();

async function step(name, action) {
  const t0 = performance.now();
  report.current = name;
  const result = await action();
  report.steps.push({ name, seconds: +((performance.now() - t0) / 1000).toFixed(2) });
  return result;
}

/** Wait for `okSelector`; fail at once with the page's own message if `errorSelector` shows first. */
async function settle(page, okSelector, errorSelector, what) {
  const ok = page.waitForSelector(okSelector, { state: "attached", timeout: STEP_TIMEOUT_MS });
  const failed = page.waitForSelector(errorSelector, { state: "visible", timeout: STEP_TIMEOUT_MS });
  const winner = await Promise.race([ok.then(() => "ok"), failed.then(() => "error")]);
  ok.catch(() => {});
  failed.catch(() => {});
  if (winner === "error") {
    throw new Error(`${what}: the page says "${await page.textContent(errorSelector)}"`);
  }
}

/** Press a play button and wait until that <audio> really plays: `playing` fired, time advanced. */
async function expectPlays(page, buttonName, audioId) {
  await page.getByRole("button", { name: buttonName }).click();
  await page.waitForFunction(
    ({ id, playedS }) => {
      const audio = document.getElementById(id);
      if (audio.error) throw new Error(`${id}: MediaError ${audio.error.code} ${audio.error.message}`);
      return window.__playing[id] > 0 && (audio.currentTime >= playedS || audio.ended);
    },
    { id: audioId, playedS: PLAYED_S },
    { timeout: 20_000 },
  );
  return page.evaluate((id) => {
    const audio = document.getElementById(id);
    return { duration_s: audio.duration, current_s: audio.currentTime, src: audio.currentSrc.split("?")[0] };
  }, audioId);
}

/** What a phone-sized screen and a screen reader would trip over. */
function auditPage() {
  const problems = [];
  const visible = (el) => el.getClientRects().length > 0;
  const textOf = (ids) => ids.split(/\s+/).map((id) => document.getElementById(id)?.textContent.trim() ?? "");
  const name = (el) =>
    (el.getAttribute("aria-label") || "").trim() ||
    textOf(el.getAttribute("aria-labelledby") || "")
      .join(" ")
      .trim() ||
    [...(el.labels || [])].map((l) => l.textContent.trim()).join(" ");
  for (const el of document.querySelectorAll("input, select, textarea, audio")) {
    if (visible(el) && !name(el)) problems.push(`no label: <${el.tagName.toLowerCase()} id="${el.id}">`);
  }
  for (const el of document.querySelectorAll("button")) {
    if (visible(el) && !(el.textContent.trim() || el.getAttribute("aria-label"))) {
      problems.push(`button without text: ${el.outerHTML}`);
    }
  }
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (!document.querySelector("[aria-live]")) problems.push("no aria-live region for status messages");
  const { scrollWidth, clientWidth } = document.documentElement;
  if (scrollWidth > clientWidth)
    problems.push(`horizontal scroll: ${scrollWidth}px wide in ${clientWidth}px`);
  return problems;
}

async function dumpFailure(page, error) {
  mkdirSync(artifacts, { recursive: true });
  const base = join(artifacts, `failure-${report.current ?? "start"}`.replace(/[^\w.-]+/g, "-"));
  report.artifacts = [`${base}.png`, `${base}.html`];
  await page
    .screenshot({ path: `${base}.png`, fullPage: true })
    .catch((e) => report.artifacts.push(`(no screenshot: ${e})`));
  writeFileSync(`${base}.html`, await page.content().catch(() => ""));
  report.failed_step = report.current ?? "start";
  report.error = String(error?.stack ?? error);
}

async function flow(page) {
  const response = await step("open", () => page.goto(demoUrl));
  report.csp = response.headers()["content-security-policy"];
  await step(LOGIN_ERROR_STEP, async () => {
    // The emulator refuses codes starting "invalid" (40029), as WeChat refuses a stale code.
    await page.getByLabel("测试用户名").fill("invalid-user");
    await page.getByRole("button", { name: "开发登录" }).click();
    await page.waitForSelector("#login-message.error");
    const shown = await page.textContent("#login-message");
    if (shown !== "登录凭证无效，请重新登录")
      throw new Error(`login error shown as ${JSON.stringify(shown)}`);
  });
  await step("dev-login", async () => {
    await page.getByLabel("测试用户名").fill(`browser-test-${Date.now()}`);
    await page.getByRole("button", { name: "开发登录" }).click();
    await page.waitForSelector("#voice-section:not([hidden])");
  });
  await step("record", async () => {
    await page.getByRole("button", { name: "开始录音" }).click();
    await page.getByRole("button", { name: "停止录音" }).waitFor();
    await page.waitForTimeout(recordSeconds * 1000);
    await page.getByRole("button", { name: "停止录音" }).click();
    await page.waitForSelector("#take:not([hidden])");
    report.recording = await page.$eval("#take", (take) => ({ ...take.dataset }));
  });
  await step("consent", async () => {
    const prompt = await page.textContent("#prompt-text");
    if (!prompt.startsWith("我是本人，同意用我的声音生成语音"))
      throw new Error(`the suggested sentence is not a consent statement: ${JSON.stringify(prompt)}`);
    const upload = page.getByRole("button", { name: "上传声音" });
    if (!(await upload.isDisabled())) throw new Error("upload is possible before consent is confirmed");
    await page.getByRole("radio", { name: /^本人/ }).check();
    if (await upload.isDisabled()) throw new Error("upload is still blocked after consent was given");
  });
  await step("upload-and-review", async () => {
    const uploaded = page.waitForResponse(
      (response) =>
        response.request().method() === "POST" && new URL(response.url()).pathname === "/v1/voices",
    );
    await page.getByRole("button", { name: "上传声音" }).click();
    const voice = await (await uploaded).json();
    if (voice.consent !== "self") throw new Error(`the voice's consent: ${JSON.stringify(voice)}`);
    if (!(await page.getByRole("button", { name: "上传声音" }).isDisabled()))
      throw new Error("the next upload is not blocked until consent is asked again");
    await settle(page, '#voice-status[data-status="ready"]', "#voice-message.error", "upload");
  });
  await step("synthesize", async () => {
    await page.getByLabel("风格").selectOption("happy");
    await page.getByLabel("要合成的文字").fill("你好，这是浏览器里合成的一句话。我们一边合成，一边播放。");
    await page.getByRole("button", { name: "开始合成" }).click();
    await settle(page, '#task-status[data-status="succeeded"]', "#synth-message.error", "synthesis");
    report.progress = await page.$$eval("#progress-log li", (items) => items.map((li) => li.dataset.status));
    if (report.sse_responses < 1) throw new Error("the page never opened the task's event stream");
    // Meanwhile the result played from its PCM stream; wait until the page has heard it out.
    await page.waitForSelector("#now-playing[data-outcome]", { state: "attached", timeout: STREAM_END_TIMEOUT_MS });
    report.stream = await page.evaluate(() => ({
      ...document.getElementById("now-playing").dataset,
      succeededAt: document.getElementById("task-status").dataset.updatedAt,
    }));
    if (report.pcm_streams < 1) throw new Error("the page never opened the task's audio stream");
  });
  report.result = await step("play-result", () => expectPlays(page, "播放合成（B）", "result-audio"));
  report.original = await step("play-original-ab", async () => {
    const original = await expectPlays(page, "播放原声（A）", "original-audio");
    if (!(await page.$eval("#result-audio", (audio) => audio.paused)))
      throw new Error("B kept playing under A");
    return original;
  });
  await step("history", () => page.waitForSelector("#history li button"));
  await step("phone-and-accessibility", async () => {
    await page.setViewportSize(PHONE);
    await page.waitForTimeout(100);
    const problems = await page.evaluate(auditPage);
    await page.screenshot({ path: join(artifacts, "phone.png"), fullPage: true });
    if (problems.length) throw new Error(`page problems:\n  ${problems.join("\n  ")}`);
  });
}

async function main() {
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: required("CHROMIUM_PATH"),
      args: chromiumArgs,
      timeout: 60_000,
    });
  } catch (error) {
    console.error(`Chromium would not start: ${error.message}`);
    return EXIT_NO_BROWSER;
  }
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  page.on("console", (message) => {
    // Chromium logs every 4xx as a console error; the login-error step asks for one.
    const expected = report.current === LOGIN_ERROR_STEP && message.text().includes("status of 400");
    if (message.type() === "error" && !expected) report.console.push(`${report.current}: ${message.text()}`);
  });
  page.on("pageerror", (error) => report.console.push(`page error: ${error.message}`));
  page.on("response", (r) => r.url().endsWith("/events") && r.status() === 200 && report.sse_responses++);
  page.on("response", (r) => {
    const url = new URL(r.url());
    if (url.pathname.endsWith("/stream") && url.searchParams.get("format") === "pcm" && r.status() === 200)
      report.pcm_streams++;
  });
  await page.addInitScript(() => {
    window.__playing = {};
    document.addEventListener(
      "playing",
      (e) => (window.__playing[e.target.id] = (window.__playing[e.target.id] || 0) + 1),
      true,
    );
  });
  try {
    await flow(page);
    if (report.console.length) throw new Error(`console errors:\n  ${report.console.join("\n  ")}`);
    report.ok = true;
  } catch (error) {
    await dumpFailure(page, error);
  } finally {
    await browser.close();
  }
  report.total_seconds = +((performance.now() - started) / 1000).toFixed(2);
  delete report.current;
  console.log(JSON.stringify(report));
  return report.ok ? 0 : EXIT_FAILED;
}

process.exitCode = await main();
