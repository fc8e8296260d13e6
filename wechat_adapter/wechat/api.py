"""A thin async client for the WeChat server APIs VoiceRelay calls (per WeChat's server API docs).

Why our own: wechatpy is synchronous, lacks the v2 security calls and stable_token, and retries
token errors without bound. Every call here has a timeout; retries are bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from events.records import AccessTokenRecord
from events.retry import RetryPolicy
from events.wechat_token import SharedTokenStore

log = logging.getLogger(__name__)

TOKEN_INVALID_CODES = frozenset({40001, 42001, 40014})
BUSY_CODE = -1
_BUSY_RETRIES = 2
# Within one call: 0.2 s before the first retry, 0.4 s before the second (counted in tries made).
_BUSY_BACKOFF = RetryPolicy(first_delay_s=0.2, max_delay_s=0.4, give_up_after=_BUSY_RETRIES + 1)
_TOKEN_EARLY_REFRESH_S = 300  # refresh five minutes before WeChat says it expires
FORCE_REFRESH_SPACING_S = 30.0
_PEER_REFRESH_WAIT_S = 3.0  # how long to wait for another instance's refresh before fetching anyway
_PEER_POLL_S = 0.05
QUOTA_EXHAUSTED = 45009


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


# Told of every HTTP request made: (api, errcode) with errcode "0" for success, "unavailable" for a
# network error, timeout or 5xx; e.g. GatewayMetrics.wechat_observer.
CallObserver = Callable[[str, str], None]
UNAVAILABLE_CODE = "unavailable"


class WeChatClient:
    """One per process; owns nothing but borrows the app's aiohttp session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        tokens: SharedTokenStore,
        *,
        api_base: str,
        appid: str,
        secret: str,
        timeout_s: float = 5.0,
        observer: CallObserver | None = None,
    ) -> None:
        self._http = http
        self._observe: CallObserver = observer or (lambda api, errcode: None)
        self._base = api_base.rstrip("/")
        self._appid = appid
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._tokens = tokens
        self._memo: AccessTokenRecord | None = None
        self._token_lock = asyncio.Lock()
        self._instance_id = uuid.uuid4().hex

    async def _request(
        self,
        api: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One call, retried (bounded, with backoff) on busy (-1), network errors and 5xx only."""
        failure = WeChatUnavailable(api)
        for attempt in range(_BUSY_RETRIES + 1):
            if attempt:
                await asyncio.sleep(_BUSY_BACKOFF.delay_s(attempt))
            try:
                body = await self._send(api, method, path, params, json_body)
            except WeChatUnavailable as exc:
                self._observe(api, UNAVAILABLE_CODE)
                failure = exc
                continue
            errcode = int(body.get("errcode") or 0)
            self._observe(api, str(errcode))
            if errcode == 0:
                return body
            if errcode == BUSY_CODE:
                failure = WeChatUnavailable(f"{api}: busy (-1)")
                continue
            if errcode == QUOTA_EXHAUSTED:
                log.error(
                    "%s: WeChat's daily quota for this API is used up (45009) until Beijing midnight", api
                )
            raise WeChatError(api, errcode, str(body.get("errmsg", "")))
        raise failure

    async def _send(
        self,
        api: str,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json_body: dict[str, Any] | None,
    ) -> dict[str, Any]:
        try:
            async with self._http.request(
                method, self._base + path, params=params, json=json_body, timeout=self._timeout
            ) as response:
                if response.status >= 500:
                    raise WeChatUnavailable(f"{api}: HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WeChatUnavailable(f"{api}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict):
            raise WeChatUnavailable(f"{api}: the answer is not a JSON object")
        return body

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

    async def access_token(self, *, rejected: str | None = None) -> str:
        """A valid stable_token, shared with every instance; `rejected` is one WeChat just refused."""
        async with self._token_lock:  # callers in this process share one look-up or fetch
            for candidate in (self._memo, await self._tokens.get()):
                if self._usable(candidate, rejected):
                    self._memo = candidate
                    return candidate.value
            self._memo = await self._refresh(rejected)
            return self._memo.value

    @staticmethod
    def _usable(token: AccessTokenRecord | None, rejected: str | None) -> bool:
        return token is not None and token.value != rejected and token.expires_at_s > time.time()

    async def _refresh(self, rejected: str | None) -> AccessTokenRecord:
        """Fetch a token as the one refresher, or take the one a peer instance just stored."""
        locked = await self._tokens.try_lock(self._instance_id)
        deadline_s = time.monotonic() + _PEER_REFRESH_WAIT_S
        while not locked and time.monotonic() < deadline_s:
            await asyncio.sleep(_PEER_POLL_S)
            shared = await self._tokens.get()
            if self._usable(shared, rejected):
                return shared
            locked = await self._tokens.try_lock(self._instance_id)
        # Not locked after the wait: the holder is stuck; stable_token is safe to call concurrently.
        try:
            shared = await self._tokens.get()
            if self._usable(shared, rejected):
                return shared
            now_s = time.time()
            last_forced_at_s = shared.last_forced_at_s if shared else 0.0
            # Force only for a token WeChat confirmed invalid, and not again within WeChat's 30 s gap.
            force = rejected is not None and now_s - last_forced_at_s >= FORCE_REFRESH_SPACING_S
            body = await self._request("stable_token", "POST", "/cgi-bin/stable_token", json_body={
                "grant_type": "client_credential", "appid": self._appid, "secret": self._secret,
                "force_refresh": force,
            })  # fmt: skip
            expires_in_s = int(body.get("expires_in", 7200))
            token = AccessTokenRecord(
                value=body["access_token"],
                expires_at_s=now_s + expires_in_s - _TOKEN_EARLY_REFRESH_S,
                fetched_at_s=now_s,
                last_forced_at_s=now_s if force else last_forced_at_s,
            )
            await self._tokens.put(token)
            log.info("access token fetched (force_refresh=%s, expires_in=%ss)", force, expires_in_s)
            return token
        finally:
            if locked:
                await self._tokens.unlock()

    async def _with_token(self, api: str, path: str, json_body: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; one refresh and one retry on an invalid token, never a loop."""
        token = await self.access_token()
        try:
            return await self._request(api, "POST", path, params={"access_token": token}, json_body=json_body)
        except WeChatError as exc:
            if exc.errcode not in TOKEN_INVALID_CODES:
                raise
            log.warning("%s: access token rejected (%s); refreshing once", api, exc.errcode)
        token = await self.access_token(rejected=token)
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
