"""A thin async client for the WeChat server APIs VoiceRelay calls (DESIGN.md "WeChat facts").

Why our own: wechatpy is synchronous, lacks the v2 security calls and stable_token, and retries
token errors without bound. Every call here has a timeout; retries are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TOKEN_INVALID_CODES = frozenset({40001, 42001, 40014})
BUSY_CODE = -1
_BUSY_RETRIES = 2
_BUSY_BACKOFF_S = 0.2
_TOKEN_EARLY_REFRESH_S = 300  # refresh five minutes before WeChat says it expires


class WeChatError(Exception):
    """WeChat answered with a non-zero errcode."""

    def __init__(self, api: str, errcode: int, errmsg: str) -> None:
        super().__init__(f"{api}: errcode {errcode}: {errmsg}")
        self.api = api
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatUnavailable(Exception):
    """WeChat could not be reached, timed out, or stayed busy (-1) through our retries."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    openid: str
    session_key: str
    unionid: str | None


@dataclass(frozen=True, slots=True)
class TextVerdict:
    suggest: str  # "pass" | "review" | "risky"
    label: int


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at_s: float


class WeChatClient:
    """One per process; owns nothing but borrows the app's aiohttp session."""

    def __init__(
        self, http: aiohttp.ClientSession, *, api_base: str, appid: str, secret: str, timeout_s: float = 5.0
    ) -> None:
        self._http = http
        self._base = api_base.rstrip("/")
        self._appid = appid
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()

    async def _request(
        self,
        api: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call with bounded retries on busy (-1) and network errors; errcode != 0 raises."""
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                async with self._http.request(
                    method, self._base + path, params=params, json=json_body, timeout=self._timeout
                ) as response:
                    if response.status >= 500:
                        raise WeChatUnavailable(f"{api}: HTTP {response.status}")
                    body = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError, WeChatUnavailable) as exc:
                if attempt == _BUSY_RETRIES:
                    raise WeChatUnavailable(f"{api}: {exc or type(exc).__name__}") from exc
            else:
                errcode = int(body.get("errcode") or 0)
                if errcode == 0:
                    return body
                if errcode != BUSY_CODE or attempt == _BUSY_RETRIES:
                    if errcode == BUSY_CODE:
                        raise WeChatUnavailable(f"{api}: busy")
                    raise WeChatError(api, errcode, str(body.get("errmsg", "")))
            await asyncio.sleep(_BUSY_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    async def code_to_session(self, code: str) -> LoginResult:
        """jscode2session: needs no access token."""
        body = await self._request(
            "jscode2session",
            "GET",
            "/sns/jscode2session",
            params={
                "appid": self._appid,
                "secret": self._secret,
                "js_code": code,
                "grant_type": "authorization_code",
            },
        )
        return LoginResult(
            openid=body["openid"], session_key=body["session_key"], unionid=body.get("unionid")
        )

    async def access_token(self, *, force_refresh: bool = False) -> str:
        """stable_token, cached until shortly before expiry; concurrent callers share one fetch."""
        stale = self._token
        async with self._token_lock:
            token = self._token
            if token and token.expires_at_s > time.time() and not (force_refresh and token is stale):
                return token.value
            body = await self._request(
                "stable_token",
                "POST",
                "/cgi-bin/stable_token",
                json_body={
                    "grant_type": "client_credential",
                    "appid": self._appid,
                    "secret": self._secret,
                    "force_refresh": force_refresh,
                },
            )
            expires_in_s = int(body.get("expires_in", 7200))
            self._token = _Token(body["access_token"], time.time() + expires_in_s - _TOKEN_EARLY_REFRESH_S)
            log.info("access token fetched (force_refresh=%s, expires_in=%ss)", force_refresh, expires_in_s)
            return self._token.value

    async def _with_token(self, api: str, path: str, json_body: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; one forced refresh and one retry on an invalid token, never a loop."""
        token = await self.access_token()
        try:
            return await self._request(api, "POST", path, params={"access_token": token}, json_body=json_body)
        except WeChatError as exc:
            if exc.errcode not in TOKEN_INVALID_CODES:
                raise
            log.warning("%s: access token rejected (%s); refreshing once", api, exc.errcode)
        token = await self.access_token(force_refresh=True)
        return await self._request(api, "POST", path, params={"access_token": token}, json_body=json_body)

    async def msg_sec_check(self, *, openid: str, content: str, scene: int) -> TextVerdict:
        """Text content security, v2 (v1 is deprecated)."""
        body = await self._with_token(
            "msg_sec_check",
            "/wxa/msg_sec_check",
            {
                "version": 2,
                "openid": openid,
                "scene": scene,
                "content": content,
            },
        )
        result = body.get("result") or {}
        return TextVerdict(suggest=str(result.get("suggest", "risky")), label=int(result.get("label", 0)))

    async def media_check_async(self, *, openid: str, media_url: str, scene: int) -> str:
        """Audio content security, v2: returns WeChat's trace_id; the verdict arrives as a push."""
        body = await self._with_token(
            "media_check_async",
            "/wxa/media_check_async",
            {
                "media_url": media_url,
                "media_type": 1,
                "version": 2,
                "scene": scene,
                "openid": openid,
            },
        )
        return str(body["trace_id"])

    async def send_subscribe_message(
        self,
        *,
        touser: str,
        template_id: str,
        page: str,
        data: dict[str, str],
        miniprogram_state: str,
        lang: str = "zh_CN",
    ) -> None:
        """subscribeMessage.send; `data` maps template keywords to values already fitted to their types."""
        await self._with_token(
            "subscribe_send",
            "/cgi-bin/message/subscribe/send",
            {
                "touser": touser,
                "template_id": template_id,
                "page": page,
                "data": {key: {"value": value} for key, value in data.items()},
                "miniprogram_state": miniprogram_state,
                "lang": lang,
            },
        )
