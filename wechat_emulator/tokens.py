"""Access tokens as WeChat hands them out: the stable pool and the classic, self-invalidating pool.

Rules emulated (WeChat's getAccessToken and getStableAccessToken docs):
- stable_token in normal mode returns the same token until five minutes before expiry, then a new
  one while the old stays valid until it expires;
- force_refresh revokes the current stable token; a second one within 30 s does not refresh (the
  current token comes back), and more than 20 a day answer 45009;
- /cgi-bin/token issues a new token on every call and revokes the previous one: the multi-instance
  race that stable_token exists to avoid. The two pools never affect each other.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import time
from collections.abc import Callable

from wechat_emulator.codes import WeChatError

TOKEN_TTL_S = 7200
EARLY_RENEW_S = 300
FORCE_REFRESH_GAP_S = 30.0
FORCE_REFRESH_PER_DAY = 20
_BEIJING = datetime.timezone(datetime.timedelta(hours=8))  # WeChat's daily quotas reset at Beijing midnight


class TokenStore:
    """Issued tokens and their expiry times; `check` answers what an API would say about a token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._serial = itertools.count(1)
        self._expires_at: dict[str, float] = {}  # every live or expired (not revoked) token
        self._stable: str | None = None
        self._classic: str | None = None
        self._last_force_at: float | None = None
        self._forced_on: tuple[datetime.date, int] | None = None  # (Beijing day, count)

    def stable(self, *, force_refresh: bool) -> tuple[str, int]:
        """(token, expires_in seconds) for POST /cgi-bin/stable_token."""
        now = self._clock()
        current = self._stable
        if force_refresh:
            recent = self._last_force_at is not None and now - self._last_force_at < FORCE_REFRESH_GAP_S
            if not (recent and current is not None and self._remaining(current, now) > 0):
                self._count_forced_refresh()
                self._last_force_at = now
                self._revoke(current)
                current = self._stable = self._issue(now)
        elif current is None or self._remaining(current, now) < EARLY_RENEW_S:
            current = self._stable = self._issue(now)
        return current, self._remaining(current, now)

    def classic(self) -> tuple[str, int]:
        """(token, expires_in seconds) for GET /cgi-bin/token; the previous classic token dies."""
        now = self._clock()
        self._revoke(self._classic)
        self._classic = self._issue(now)
        return self._classic, TOKEN_TTL_S

    def check(self, token: str | None) -> None:
        """Raise the WeChat error an API call with this token would get (41001, 40001 or 42001)."""
        if not token:
            raise WeChatError(41001)
        expires_at = self._expires_at.get(token)
        if expires_at is None:
            raise WeChatError(40001)
        if expires_at <= self._clock():
            raise WeChatError(42001)

    def invalidate_all(self) -> None:
        """Revoke every token issued so far: each one now answers 40001."""
        self._expires_at.clear()
        self._stable = self._classic = None

    def expire_all(self) -> None:
        """Let every token issued so far run out: each one now answers 42001."""
        now = self._clock()
        for token in self._expires_at:
            self._expires_at[token] = now

    def _issue(self, now: float) -> str:
        token = f"{next(self._serial)}_{secrets.token_urlsafe(96)}"
        self._expires_at[token] = now + TOKEN_TTL_S
        return token

    def _revoke(self, token: str | None) -> None:
        if token is not None:
            self._expires_at.pop(token, None)

    def _remaining(self, token: str, now: float) -> int:
        return max(0, int(self._expires_at.get(token, now) - now))

    def _count_forced_refresh(self) -> None:
        today = datetime.datetime.now(_BEIJING).date()
        day, count = self._forced_on if self._forced_on and self._forced_on[0] == today else (today, 0)
        if count >= FORCE_REFRESH_PER_DAY:
            raise WeChatError(45009)
        self._forced_on = (day, count + 1)
