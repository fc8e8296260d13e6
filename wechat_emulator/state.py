"""The emulator's in-memory state and its scripting surface (what tests drive in-process).

One `Emulator` per app; nothing here is global. Tests reach it as `app[EMULATOR_KEY]`, and the
control endpoints under `/_emulator/` call the same methods for out-of-process users (`make up`).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections import deque
from typing import Any, Final

from aiohttp import web

from wechat_emulator.codes import WeChatError, new_rid
from wechat_emulator.config import EmulatorConfig
from wechat_emulator.media import MediaJob, MediaPipeline
from wechat_emulator.records import PushAttempt, RecordedCall, Verdict
from wechat_emulator.tokens import TokenStore

# The names `script_error` and `set_latency` take, one per emulated endpoint.
API_NAMES: Final = frozenset(
    {"jscode2session", "stable_token", "token", "msg_sec_check", "media_check_async", "subscribe_send"}
)
# Handy codes for login tests: a code starting with one of these prefixes gets that error.
CODE_PREFIX_ERRORS: Final = {"invalid": 40029, "risky": 40226, "busy": -1, "limited": 45011}
_UNCONSUMED_PREFIXES: Final = ("busy", "limited")  # transient errors leave the code usable, as on WeChat
_DEFAULT_MEDIA_VERDICT: Final = Verdict("pass", "100")


class Emulator:
    """Everything the emulated WeChat knows: users, codes, tokens, scripts, and what it was sent."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.calls: list[RecordedCall] = []
        self.sent_messages: list[dict[str, Any]] = []
        self.pushes: list[PushAttempt] = []
        self.tokens = TokenStore()
        self._media = MediaPipeline(config, self.pushes)
        self._scripts: dict[str, deque[WeChatError]] = {}
        self._latency_s: dict[str, float] = {}
        self._text_verdicts: dict[str, Verdict] = {}
        self._media_verdict = _DEFAULT_MEDIA_VERDICT
        self._used_codes: set[str] = set()
        self._known_openids: set[str] = set()
        self._msgids = itertools.count(3_000_000_000_000_000_001)

    # --- lifecycle (paired; the app's cleanup context calls both) ---------------------------------

    async def start(self) -> None:
        await self._media.start()

    async def close(self) -> None:
        """Drain then cancel pending media checks and close the HTTP client."""
        await self._media.close()

    async def settle(self) -> None:
        """Wait until every media check accepted so far has pushed its verdict (or given up)."""
        await self._media.settle()

    # --- scripting ---------------------------------------------------------------------------------

    def script_error(self, api: str, errcode: int, errmsg: str = "", times: int = 1) -> None:
        """Answer the next `times` calls to `api` with this error instead of handling them."""
        self._require_api(api)
        if times < 1:
            raise ValueError("times must be at least 1")
        queue = self._scripts.setdefault(api, deque())
        queue.extend(WeChatError(errcode, errmsg or None) for _ in range(times))

    def clear_scripts(self, api: str | None = None) -> None:
        """Drop scripted errors not yet answered (for `api`, or for every API)."""
        if api is None:
            self._scripts.clear()
        else:
            self._require_api(api)
            self._scripts.pop(api, None)

    def set_latency(self, api: str, seconds: float) -> None:
        """Delay every answer of `api` by `seconds` (0 removes the delay)."""
        self._require_api(api)
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        self._latency_s[api] = seconds

    def set_text_verdict(self, word: str, suggest: str, label: int) -> None:
        """msg_sec_check: text containing `word` gets this verdict (the most severe match wins)."""
        if not word:
            raise ValueError("word must not be empty")
        self._text_verdicts[word] = Verdict(suggest, label)

    def set_media_verdict(self, suggest: str, label: int | str) -> None:
        """The verdict pushed for media checks accepted from now on (default pass / "100")."""
        self._media_verdict = Verdict(suggest, label)

    def set_media_delay(self, seconds: float) -> None:
        """How long media checks accepted from now on wait before downloading and pushing."""
        self._media.verdict_delay_s = seconds

    def invalidate_tokens(self) -> None:
        """Every access token issued so far becomes invalid (40001), as after a forced refresh elsewhere."""
        self.tokens.invalidate_all()

    def expire_tokens(self) -> None:
        """Every access token issued so far runs out (42001)."""
        self.tokens.expire_all()

    def reset(self) -> None:
        """Forget all traffic, scripts, users and tokens; the configuration stays."""
        self.calls.clear()
        self.sent_messages.clear()
        self.pushes.clear()
        self._media.forget_messages()
        self._scripts.clear()
        self._latency_s.clear()
        self._text_verdicts.clear()
        self._media_verdict = _DEFAULT_MEDIA_VERDICT
        self._used_codes.clear()
        self._known_openids.clear()
        self.tokens = TokenStore()

    async def handshake(self) -> dict[str, Any]:
        """Verify the push URL as WeChat does when it is configured; `ok` is True if echostr came back."""
        return await self._media.handshake()

    async def repush(self, trace_id: str) -> bool:
        """Push a decided media verdict again (WeChat may repeat pushes); False if unknown."""
        return await self._media.repush(trace_id)

    # --- what the endpoints consult -----------------------------------------------------------------

    def latency_s(self, api: str) -> float:
        return self._latency_s.get(api, 0.0)

    def take_scripted_error(self, api: str) -> WeChatError | None:
        queue = self._scripts.get(api)
        return queue.popleft() if queue else None

    def openid_for(self, code: str) -> str:
        """The openid a login code maps to: one per user, where the user is the code's part before
        the first ":" (so "alice:1" and "alice:2" both log in alice)."""
        user = code.split(":", 1)[0]
        digest = hashlib.sha256(f"{self.config.appid}\0{user}".encode()).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode()[:27]

    def login(self, code: str) -> dict[str, str]:
        """jscode2session for a well-formed request: codes are single use."""
        errcode = next((e for p, e in CODE_PREFIX_ERRORS.items() if code.startswith(p)), None)
        if errcode is not None and code.startswith(_UNCONSUMED_PREFIXES):
            raise WeChatError(errcode)
        if code in self._used_codes:
            raise WeChatError(40029)
        self._used_codes.add(code)
        if errcode is not None:
            raise WeChatError(errcode)
        openid = self.openid_for(code)
        self._known_openids.add(openid)
        return {"session_key": base64.b64encode(secrets.token_bytes(16)).decode(), "openid": openid}

    def add_user(self, code: str) -> str:
        """Make the user behind `code` known without a login (for tests that create sessions directly)."""
        openid = self.openid_for(code)
        self._known_openids.add(openid)
        return openid

    def require_user(self, openid: object) -> str:
        """40003 unless `openid` belongs to a user who has logged in to this emulator."""
        if not isinstance(openid, str) or openid not in self._known_openids:
            raise WeChatError(40003)
        return openid

    def judge_text(self, text: str) -> tuple[Verdict, str | None]:
        """The verdict for `text` and the scripted word that caused it (None: plain pass)."""
        hits = [(verdict, word) for word, verdict in self._text_verdicts.items() if word in text]
        if not hits:
            return Verdict("pass", 100), None
        return max(hits, key=lambda hit: hit[0].severity)

    def accept_media_check(self, *, openid: str, media_url: str, call: RecordedCall) -> str:
        """Start a media check in the background and return its trace_id at once."""
        trace_id = new_rid()
        self._media.submit(MediaJob(trace_id, openid, media_url, self._media_verdict, call))
        return trace_id

    def record_message(self, body: dict[str, Any]) -> int:
        """Keep an accepted subscription message; returns its msgid."""
        self.sent_messages.append(body)
        return next(self._msgids)

    @staticmethod
    def _require_api(api: str) -> None:
        if api not in API_NAMES:
            raise ValueError(f"unknown api {api!r}; known: {sorted(API_NAMES)}")


EMULATOR_KEY: Final = web.AppKey("wechat_emulator", Emulator)
