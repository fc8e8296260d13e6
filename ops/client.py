"""An HTTP client that does what the mini program does: used by `ops demo`, benchmarks and tests."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error_code(self) -> str | None:
        return self.body.get("error", {}).get("code") if isinstance(self.body, dict) else None


class ApiClient:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None = None) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.openid: str | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return headers | (extra or {})

    async def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs
    ) -> Reply:
        url = path if path.startswith("http") else self.base_url + path
        async with self.http.request(method, url, headers=self._headers(headers), **kwargs) as response:
            raw = await response.read()
            content_type = response.headers.get("Content-Type", "")
            body: Any = json.loads(raw) if content_type.startswith("application/json") and raw else raw
            return Reply(response.status, body, dict(response.headers))

    async def login(self, code: str) -> Reply:
        reply = await self.request("POST", "/v1/session", json={"code": code})
        if reply.status == 200:
            self.token, self.openid = reply.body["token"], reply.body["openid"]
        return reply

    async def upload_voice(
        self,
        audio: bytes,
        *,
        filename: str = "sample.wav",
        prompt_text: str = "你好，这是我的声音。",
        name: str = "我的声音",
        as_base64: bool = False,
        consent: str | None = "self",
    ) -> Reply:
        """Multipart exactly as wx.uploadFile sends it, or the JSON base64 variant.

        `consent`: the speaker's consent, "self" or "authorized"; None sends none (refused)."""
        if as_base64:
            encoded = base64.b64encode(audio).decode()
            body = {"audio_base64": encoded, "prompt_text": prompt_text, "name": name}
            if consent is not None:
                body["consent"] = consent
            return await self.request("POST", "/v1/voices", json=body)
        form = aiohttp.FormData()
        # A file object, not bytes: aiohttp streams it (and warns about large in-memory bytes).
        form.add_field("file", io.BytesIO(audio), filename=filename, content_type="application/octet-stream")
        form.add_field("prompt_text", prompt_text)
        form.add_field("name", name)
        if consent is not None:
            form.add_field("consent", consent)
        return await self.request("POST", "/v1/voices", data=form)

    async def wait_voice(self, voice_id: str, *, timeout_s: float = 30) -> dict[str, Any]:
        """Poll until the voice leaves pending_review (WeChat's verdict arrived)."""
        async with asyncio.timeout(timeout_s):
            while True:
                reply = await self.request("GET", f"/v1/voices/{voice_id}")
                if reply.status != 200 or reply.body["status"] != "pending_review":
                    return reply.body
                await asyncio.sleep(0.1)

    async def synthesize(self, text: str, voice_id: str, **options: Any) -> Reply:
        headers = (
            {"Idempotency-Key": options.pop("idempotency_key")} if "idempotency_key" in options else None
        )
        return await self.request(
            "POST", "/v1/syntheses", json={"text": text, "voice_id": voice_id, **options}, headers=headers
        )

    async def wait_task(self, task_id: str, *, timeout_s: float = 60) -> dict[str, Any]:
        """Poll with backoff until the task reaches a final status, as the mini program does."""
        delay_s = 0.05
        async with asyncio.timeout(timeout_s):
            while True:
                reply = await self.request("GET", f"/v1/syntheses/{task_id}")
                if reply.body["status"] in {"succeeded", "failed", "rejected"}:
                    return reply.body
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 1.5, 1.0)

    async def follow_events(self, task_id: str, *, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Read the task's SSE stream to its end; returns the `status` events' payloads."""
        events: list[dict[str, Any]] = []
        async with (
            asyncio.timeout(timeout_s),
            self.http.get(
                f"{self.base_url}/v1/syntheses/{task_id}/events", headers=self._headers()
            ) as response,
        ):
            assert response.status == 200, response.status
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for line in response.content:
                text = line.decode().rstrip("\n")
                if text.startswith("data: "):
                    events.append(json.loads(text[6:]))
        return events


async def eventually(check, *, timeout_s: float = 10.0, interval_s: float = 0.05):
    """Poll `check()` (sync or async) until it returns something truthy; return that."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval_s)
