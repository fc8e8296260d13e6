"""The H5 page at /demo/: how it is served, and the whole flow in a real headless Chromium.

The browser test gets its own tools: Debian's `chromium` (apt, when running as root) and
playwright-core (`npm ci` in tests/browser). It is skipped, saying why, only where Chromium cannot
be had or started; every other failure fails, with a screenshot under tests/browser/artifacts/.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from multidict import CIMultiDict
from stack import SAMPLE_TEXT, Stack, serving, speech
from test_audio_stream import PacedEngine

from common.audio import to_wav_16k_mono
from ops.services.ports import free_port
from wechat_adapter.app import create_app

BROWSER_DIR = Path(__file__).parent / "browser"
ARTIFACTS_DIR = BROWSER_DIR / "artifacts"
CHROMIUM = "chromium"  # Debian's package, /usr/bin/chromium
NODE_MIN_MAJOR = 20
INSTALL_TIMEOUT_S = 240
DRIVER_TIMEOUT_S = 200
EXIT_NO_BROWSER = 3  # demo_flow.mjs: Chromium would not start
# The session worker pauses this long before each piece it streams, as a GPU takes time to make them,
# so the page visibly hears the result while it is synthesised (the CPU engine alone is quicker than
# the page can tell apart from a finished file).
STREAM_PAUSE_S = 0.6


# --- how the page is served ---------------------------------------------------------------------------


async def test_page_files_are_served_with_a_strict_policy(stack: Stack) -> None:
    client = stack.client()
    page = await client.request("GET", "/demo/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert f"media-src 'self' blob: {stack.url}" in policy  # task audio_urls are absolute
    assert f"connect-src 'self' {stack.url}" in policy  # and so are their stream_urls
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"

    for name, content_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        reply = await client.request("GET", f"/demo/{name}")
        assert (reply.status, reply.headers["Content-Type"]) == (200, f"{content_type}; charset=utf-8")
        assert reply.headers["Content-Security-Policy"] == policy

    etag = CIMultiDict(page.headers)["ETag"]  # the client spells it "Etag"
    revalidated = await client.request("GET", "/demo/", headers={"If-None-Match": etag})
    assert revalidated.status == 304

    bare = await client.request("GET", "/demo", allow_redirects=False)
    assert (bare.status, bare.headers["Location"]) == (308, "/demo/")
    missing = await client.request("GET", "/demo/secrets.py")
    assert (missing.status, missing.error_code) == (404, "not_found")


async def test_dev_login_is_offered_only_with_the_emulators_app(stack: Stack) -> None:
    emulated = await stack.client().request("GET", "/demo/config.json")
    assert emulated.status == 200
    assert emulated.body == {
        "dev_login": True,
        "text_max_chars": stack.settings.text_max_chars,
        "upload_max_bytes": stack.settings.upload_max_bytes,
    }
    production = dataclasses.replace(stack.settings, wechat_appid="wx0123456789abcdef")
    port = free_port()
    async with serving(create_app(production), port):
        reply = await stack.client().request("GET", f"http://127.0.0.1:{port}/demo/config.json")
    assert (reply.status, reply.body["dev_login"]) == (200, False)


# --- the whole flow in headless Chromium ----------------------------------------------------------------


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM first: playwright-core then closes the Chromium it started (its own process group)."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _run(*command: str, cwd: Path | None = None, timeout_s: float) -> tuple[int, str]:
    """Run a command without blocking the event loop (the stack lives on it): (status, output)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        await _stop(process)
        return -1, f"{' '.join(command)} took over {timeout_s} s"
    return process.returncode or 0, output.decode(errors="replace")


async def _ensure_chromium() -> Path:
    """Debian's chromium, installed with apt when missing (root only); skips when it cannot be had."""
    if found := shutil.which(CHROMIUM):
        return Path(found)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    install = (
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "-o",
        "DPkg::Lock::Timeout=120",
        "chromium",
    )
    status, output = await _run(*install, timeout_s=INSTALL_TIMEOUT_S)
    if status != 0:  # a fresh machine may have no package lists yet
        await _run("apt-get", "update", timeout_s=INSTALL_TIMEOUT_S)
        status, output = await _run(*install, timeout_s=INSTALL_TIMEOUT_S)
    found = shutil.which(CHROMIUM)
    if status != 0 or found is None:
        pytest.skip(f"could not install chromium with apt-get: {output.strip()[-500:]}")
    return Path(found)


async def _ensure_playwright() -> None:
    """playwright-core as pinned in tests/browser/package-lock.json; skips without Node.js >= 20."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the browser test needs Node.js >= 20 and npm on PATH")
    status, version = await _run("node", "--version", timeout_s=30)
    if status != 0 or int(version.strip().lstrip("v").split(".")[0]) < NODE_MIN_MAJOR:
        pytest.skip(f"the browser test needs Node.js >= {NODE_MIN_MAJOR}, found {version.strip()}")
    if (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return
    status, output = await _run(
        "npm", "ci", "--no-audit", "--no-fund", cwd=BROWSER_DIR, timeout_s=INSTALL_TIMEOUT_S
    )
    if status != 0:
        pytest.skip(f"npm ci in tests/browser failed (no npm registry?): {output.strip()[-500:]}")


@pytest.fixture
async def fake_microphone_wav(tmp_path: Path) -> Path:
    """About 7 s of espeak Mandarin as 16 kHz mono s16 WAV, which Chromium's fake capture loops."""
    path = tmp_path / "speech.wav"
    path.write_bytes(to_wav_16k_mono(speech(SAMPLE_TEXT)))
    return path


@pytest.fixture
def paced_worker(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session worker's engine paced like a GPU for this test (test_audio_stream.PacedEngine:
    a pause before each streamed piece), so a synthesis visibly takes a while."""
    runner = stack.worker
    assert runner is not None, "the session stack runs its worker in this process"
    monkeypatch.setattr(runner, "_engine", PacedEngine(runner._engine, STREAM_PAUSE_S))


@pytest.mark.timeout(INSTALL_TIMEOUT_S + DRIVER_TIMEOUT_S)
async def test_the_page_records_uploads_synthesises_and_plays(
    stack: Stack, fake_microphone_wav: Path, paced_worker: None
) -> None:
    chromium = await _ensure_chromium()
    await _ensure_playwright()
    shutil.rmtree(ARTIFACTS_DIR, ignore_errors=True)
    ARTIFACTS_DIR.mkdir(parents=True)
    process = await asyncio.create_subprocess_exec(
        "node",
        "demo_flow.mjs",
        cwd=BROWSER_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ
        | {
            "DEMO_URL": f"{stack.url}/demo/",
            "CHROMIUM_PATH": str(chromium),
            "FAKE_AUDIO_WAV": str(fake_microphone_wav),
            "ARTIFACTS_DIR": str(ARTIFACTS_DIR),
        },
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), DRIVER_TIMEOUT_S)
    except TimeoutError:
        await _stop(process)
        pytest.fail(f"the browser driver took over {DRIVER_TIMEOUT_S} s")
    if process.returncode == EXIT_NO_BROWSER:
        pytest.skip(f"Chromium cannot run here: {stderr.decode(errors='replace').strip()[-500:]}")
    lines = stdout.decode(errors="replace").strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    assert process.returncode == 0 and report.get("ok"), (
        f"browser flow failed at step {report.get('failed_step')!r}: {report.get('error')}\n"
        f"screenshot and page: {report.get('artifacts')}\n"
        f"driver stderr: {stderr.decode(errors='replace')[-2000:]}"
    )
    print("browser steps (s):", {step["name"]: step["seconds"] for step in report["steps"]})
    # MediaRecorder's own format went through the real intake (Opus in WebM in Chromium).
    assert report["recording"]["type"].startswith("audio/webm"), report["recording"]
    # What the page played: the synthesis (B) and the uploaded sample (A), both for real.
    assert report["result"]["src"].endswith("/audio") and report["result"]["duration_s"] > 0.5
    assert "/v1/voices/" in report["original"]["src"] and report["original"]["duration_s"] > 3
    assert report["progress"][-1] == "succeeded"
    # The result played from its PCM stream, starting before the task was finished: the page
    # scheduled its first AudioBuffer while the task was still queued or running, and before the
    # server's own time of success; the stream brought all of it, so the file was not played again.
    stream = report["stream"]
    first_audio = int(stream["firstAudioAt"]) / 1000
    succeeded = datetime.fromisoformat(stream["succeededAt"]).timestamp()
    print(f"first audio {succeeded - first_audio:.2f} s before the task succeeded; stream: {stream}")
    assert stream["statusAtFirstAudio"] in ("queued", "running"), stream
    assert first_audio < succeeded - STREAM_PAUSE_S / 2, stream
    assert stream["outcome"] == "streamed" and float(stream["receivedS"]) > 1.0, stream
