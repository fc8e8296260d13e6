"""The asynchronous half of mediaCheckAsync: download the media, decide, push the verdict.

Every job is a task owned by `MediaPipeline`: it is tracked in a set, awaited by `settle()`, and
drained then cancelled by `close()`, so no download or push outlives the app that started it.
The pipeline also does the push URL's GET handshake, since it owns the outbound HTTP session.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from wechat_emulator.config import EmulatorConfig
from wechat_emulator.push import PushEncoder, sha1_signature
from wechat_emulator.records import PushAttempt, RecordedCall, Verdict

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
MAX_MEDIA_BYTES = 10 * 1024 * 1024  # WeChat's limit for one checked file
DOWNLOAD_FAILED_ERRCODE = -1  # WeChat reports a detection it could not run as a system error
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class MediaJob:
    """One accepted media_check_async call; `verdict` is the one scripted when it was accepted."""

    trace_id: str
    openid: str
    media_url: str
    verdict: Verdict
    call: RecordedCall


@dataclass(frozen=True)
class Download:
    status: int | None
    size_bytes: int
    error: str | None


class MediaPipeline:
    """Owns the outbound HTTP client session and the tasks of pending media checks."""

    def __init__(self, config: EmulatorConfig, pushes: list[PushAttempt]) -> None:
        self._config = config
        self.verdict_delay_s = config.media_verdict_delay_s
        self._pushes = pushes
        self._encoder = PushEncoder(config)
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._messages: dict[str, dict[str, Any]] = {}  # trace_id -> pushed message, for re-pushes

    async def start(self) -> None:
        """Open the client session used for downloads and pushes."""
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        """Give pending checks a short grace period, cancel the rest, then close the session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._config.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                log.info("cancelled %d pending media checks at shutdown", len(pending))
                await asyncio.wait(pending)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def submit(self, job: MediaJob) -> None:
        """Start the check in the background; the API call has already been answered."""
        self._client()  # refuse now, not later inside the task, when the app is not running
        task = asyncio.create_task(self._run(job), name=f"media-check-{job.trace_id}")
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    async def settle(self) -> None:
        """Wait until every check submitted so far (and any it led to) has finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def repush(self, trace_id: str) -> bool:
        """Push an already-decided verdict again, as WeChat may; False if the trace id is unknown."""
        message = self._messages.get(trace_id)
        if message is None:
            return False
        await self._push(trace_id, message)
        return True

    def forget_messages(self) -> None:
        self._messages.clear()

    async def handshake(self) -> dict[str, Any]:
        """WeChat's push-URL verification: a signed GET with `echostr`, which the gateway must echo."""
        url = self._config.push_url
        if url is None:
            raise ValueError("no push_url configured")
        client = self._client()
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        echostr = secrets.token_hex(8)
        query = {
            "signature": sha1_signature(self._config.push_token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }
        timeout = aiohttp.ClientTimeout(total=self._config.push_timeout_s)
        try:
            async with client.get(url, params=query, timeout=timeout) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return {"ok": False, "status": None, "body": "", "error": f"{type(exc).__name__}: {exc}"}
        ok = status == 200 and text == echostr
        log.info("push URL handshake with %s: status=%s echoed=%s", url, status, text == echostr)
        return {"ok": ok, "status": status, "body": text, "error": None}

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the emulator app is not running: start it before outbound calls")
        return self._http

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media check task %s failed", task.get_name(), exc_info=task.exception())

    async def _run(self, job: MediaJob) -> None:
        await asyncio.sleep(self.verdict_delay_s)
        download = await self._download(job.media_url)
        job.call.details.update(
            download_status=download.status, download_bytes=download.size_bytes, download_error=download.error
        )
        message = self._message(job, download)
        self._messages[job.trace_id] = message
        log.info(
            "media check trace_id=%s download status=%s bytes=%d verdict=%s",
            job.trace_id,
            download.status,
            download.size_bytes,
            message["result"]["suggest"],
        )
        await self._push(job.trace_id, message)

    async def _download(self, url: str) -> Download:
        client = self._client()
        size = 0
        try:
            async with client.get(url, timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)) as resp:
                async for chunk in resp.content.iter_chunked(_CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_MEDIA_BYTES:
                        return Download(resp.status, size, f"larger than {MAX_MEDIA_BYTES} bytes")
                error = None if resp.status == 200 else f"HTTP {resp.status}"
                return Download(resp.status, size, error)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Download(None, size, f"{type(exc).__name__}: {exc}")

    def _message(self, job: MediaJob, download: Download) -> dict[str, Any]:
        """The `wxa_media_check` event, shaped like WeChat's v2 push."""
        if download.error is None:
            errcode, errmsg, verdict = 0, "ok", job.verdict
        else:
            errcode, errmsg = DOWNLOAD_FAILED_ERRCODE, f"media download failed: {download.error}"
            # Nothing was judged: ask for human review, keeping the label's type (str or int) as scripted.
            verdict = Verdict("review", "100" if isinstance(job.verdict.label, str) else 100)
        return {
            "ToUserName": self._config.original_id,
            "FromUserName": job.openid,
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "wxa_media_check",
            "appid": self._config.appid,
            "trace_id": job.trace_id,
            "version": 2,
            "errcode": errcode,
            "errmsg": errmsg,
            "result": {"suggest": verdict.suggest, "label": verdict.label},
            "detail": [
                {
                    "strategy": "content_model",
                    "errcode": errcode,
                    "suggest": verdict.suggest,
                    "label": verdict.label,
                    "prob": 90 if errcode == 0 else 0,
                }
            ],
        }

    async def _push(self, trace_id: str, message: dict[str, Any]) -> None:
        url = self._config.push_url
        if url is None:
            log.warning("no push_url configured: verdict for trace_id=%s not pushed", trace_id)
            return
        for attempt in range(1, self._config.push_attempts + 1):
            record = await self._deliver(trace_id, url, message, attempt)
            self._pushes.append(record)
            log.info(
                "push trace_id=%s attempt=%d status=%s error=%s",
                trace_id,
                attempt,
                record.status,
                record.error,
            )
            if record.delivered:
                return
            if attempt < self._config.push_attempts:
                await asyncio.sleep(self._config.push_retry_delay_s)
        log.warning("push trace_id=%s not delivered after %d attempts", trace_id, self._config.push_attempts)

    async def _deliver(self, trace_id: str, url: str, message: dict[str, Any], attempt: int) -> PushAttempt:
        client = self._client()
        request = self._encoder.encode(message)
        status, text, error = None, "", None
        try:
            async with client.post(
                url,
                params=request.query,
                data=request.body,
                headers={"Content-Type": request.content_type},
                timeout=aiohttp.ClientTimeout(total=self._config.push_timeout_s),
            ) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        return PushAttempt(trace_id, url, attempt, request.query, status, text, error, time.time())
