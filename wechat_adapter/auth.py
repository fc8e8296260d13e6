"""Who is calling: bearer session tokens, their revocation, signed resource links, the session_key vault.

Tokens are itsdangerous signatures over the openid, a random session id and the issue time (ms), so
any gateway instance sharing SESSION_SECRET checks the signature and expiry without a lookup.

Revocation (`SessionRevocationCheck`): logging out (`DELETE /v1/session`) revokes one session, a
login that WeChat refuses as high-risk (40226) revokes every session of the user the caller's token
names; both are recorded in KV (`events.state.SessionRevocations`, kept longer than a token lives)
and looked up on every authenticated request through a small in-process cache. So a revoked token
stops working at once on the instance that revoked it, and within `REVOCATION_CACHE_S` (5 s) on
every other instance: that is how long a revoked token may still work elsewhere. When KV cannot be
asked, the request is refused (503 `unavailable`), never let through.

Key rotation: a token starts with the id of the key that signed it (`<key id>~<signed>`, the key id
derived from the secret, never the secret itself). New tokens are signed with SESSION_SECRET;
SESSION_SECRET_PREVIOUS, when set, is accepted for verification only. Rotate by moving the current
secret to SESSION_SECRET_PREVIOUS and setting a new SESSION_SECRET on every gateway; once the token
TTL (7 days) has passed, drop the previous one: its tokens have expired by then. Resource links are
signed with the current secret and accepted under either (they live hours at most). The vault seals
with the current secret and opens with either: a session_key sealed under a secret that is no longer
configured cannot be opened, and stays so until the user's next login seals a new one (nothing in
the gateway reads session_key back today). Tokens of the format before key ids are refused: their
users log in again, which the mini program does by itself on a 401.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadSignature, URLSafeTimedSerializer

from common.owners import is_valid_owner
from events.state import SessionRevocations
from wechat_adapter.errors import ApiError

# How long this instance trusts what it read about a session's revocation (see the module docstring),
# and how many sessions it remembers at most.
REVOCATION_CACHE_S = 5.0
REVOCATION_CACHE_ENTRIES = 10_000
_KEY_ID_SEPARATOR = "~"  # neither in itsdangerous' URL-safe alphabet nor special in a header


def _derive(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"voicerelay:{purpose}:{secret}".encode()).digest()


def key_id(secret: str) -> str:
    """The id a token carries of the secret that signed it: a short hash, useless for guessing it."""
    return hashlib.sha256(f"voicerelay:key-id:{secret}".encode()).hexdigest()[:8]


def _secrets(current: str, previous: str) -> list[str]:
    """itsdangerous' key list: it tries each, and signs with the last one (the current secret)."""
    return [previous, current] if previous and previous != current else [current]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: whose session, which session, issued when (ms since the epoch)."""

    owner: str
    session_id: str
    issued_ms: int


class SessionTokens:
    """Bearer tokens for the mini program: openid, session id and issue time, signed with an expiry.

    Pure: signature, key id and expiry only; whether the session was revoked since is
    `SessionRevocationCheck`'s question.
    """

    def __init__(self, secret: str, *, ttl_s: int, previous_secret: str = "") -> None:
        self._key_id = key_id(secret)
        self._serializers = {
            key_id(s): URLSafeTimedSerializer(s, salt="voicerelay.session")
            for s in _secrets(secret, previous_secret)
        }
        self.ttl_s = ttl_s

    def issue(self, openid: str) -> str:
        payload = {"o": openid, "s": secrets.token_hex(16), "i": _now_ms()}
        return f"{self._key_id}{_KEY_ID_SEPARATOR}{self._serializers[self._key_id].dumps(payload)}"

    def verify(self, token: str) -> TokenClaims | None:
        """The claims of a token signed by a configured secret and not expired, else None."""
        kid, sep, signed = token.partition(_KEY_ID_SEPARATOR)
        serializer = self._serializers.get(kid) if sep else None
        if serializer is None:
            return None
        try:
            payload = serializer.loads(signed, max_age=self.ttl_s)
        except BadSignature:  # also SignatureExpired, its subclass
            return None
        if not isinstance(payload, dict):
            return None
        openid, session_id, issued_ms = payload.get("o"), payload.get("s"), payload.get("i")
        if not (isinstance(openid, str) and is_valid_owner(openid)):
            return None
        if not (isinstance(session_id, str) and session_id.isalnum() and session_id.isascii()):
            return None
        if not isinstance(issued_ms, int) or isinstance(issued_ms, bool):
            return None
        return TokenClaims(openid, session_id, issued_ms)


class _Expiring:
    """A bounded map whose entries are forgotten after `ttl_s` (the oldest go first when it is full)."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[object, tuple[float, object]] = OrderedDict()

    def get(self, key: object) -> tuple[bool, object]:
        found = self._entries.get(key)
        if found is None or found[0] <= self._clock():
            return False, None
        return True, found[1]

    def put(self, key: object, value: object) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl_s, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class SessionRevocationCheck:
    """Whether a validly signed token was revoked since: KV, behind a short in-process cache.

    The cache holds, for `cache_s`, what KV said about a session and about its owner's revoke-all
    time; revocations made here update it at once. A KV failure raises ApiError("unavailable").
    """

    def __init__(
        self,
        revocations: SessionRevocations,
        *,
        cache_s: float = REVOCATION_CACHE_S,
        max_entries: int = REVOCATION_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._revocations = revocations
        self.cache_s = cache_s  # how long a revocation made here may go unseen by another instance
        self._sessions = _Expiring(cache_s, max_entries, clock)  # (owner, session id) -> revoked
        self._owners = _Expiring(cache_s, max_entries, clock)  # owner -> revoked until (ms)

    async def is_revoked(self, claims: TokenClaims) -> bool:
        session_key = (claims.owner, claims.session_id)
        known_session, revoked = self._sessions.get(session_key)
        known_owner, revoked_until_ms = self._owners.get(claims.owner)
        try:
            if not known_session and not known_owner:
                revoked, revoked_until_ms = await asyncio.gather(
                    self._revocations.is_session_revoked(*session_key),
                    self._revocations.revoked_until_ms(claims.owner),
                )
            elif not known_session:
                revoked = await self._revocations.is_session_revoked(*session_key)
            elif not known_owner:
                revoked_until_ms = await self._revocations.revoked_until_ms(claims.owner)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise ApiError("unavailable", detail=f"cannot check the session's revocation: {exc!r}") from exc
        if not known_session:  # only what was read now: a cached answer must not outlive cache_s
            self._sessions.put(session_key, revoked)
        if not known_owner:
            self._owners.put(claims.owner, revoked_until_ms)
        return bool(revoked) or claims.issued_ms <= int(revoked_until_ms or 0)

    async def revoke(self, claims: TokenClaims) -> None:
        """This one session (logout)."""
        await self._revocations.revoke_session(claims.owner, claims.session_id)
        self._sessions.put((claims.owner, claims.session_id), True)

    async def revoke_all(self, owner: str) -> None:
        """Every session of `owner` issued until now."""
        now_ms = _now_ms()
        await self._revocations.revoke_all(owner, issued_until_ms=now_ms)
        _, cached = self._owners.get(owner)
        self._owners.put(owner, max(now_ms, int(cached or 0)))


class ResourceLinks:
    """Short-lived signed links for URLs fetched without our headers (InnerAudioContext, WeChat)."""

    def __init__(self, secret: str, *, previous_secret: str = "") -> None:
        # Signed with the current secret; verified under either, so links handed out just before a
        # rotation keep working for their short life.
        self._serializer = URLSafeTimedSerializer(_secrets(secret, previous_secret), salt="voicerelay.link")

    def sign(self, kind: str, owner: str, item_id: str) -> str:
        return self._serializer.dumps([kind, owner, item_id])

    def verify(self, token: str, kind: str, *, max_age_s: int) -> tuple[str, str] | None:
        """(owner, item_id) of a valid link of this kind, else None."""
        try:
            signed_kind, owner, item_id = self._serializer.loads(token, max_age=max_age_s)
        except (BadSignature, ValueError, TypeError):
            return None
        if signed_kind != kind or not is_valid_owner(owner):
            return None
        return owner, item_id


class SessionKeyVault:
    """Seals WeChat's session_key for storage; it is never returned to clients nor logged.

    Seals with the current secret, opens with the current or the previous one (module docstring).
    """

    def __init__(self, secret: str, *, previous_secret: str = "") -> None:
        keys = _secrets(secret, previous_secret)
        self._aead = AESGCM(_derive(secret, "session-key"))
        self._openers = [AESGCM(_derive(s, "session-key")) for s in reversed(keys)]

    def seal(self, session_key: str, owner: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, session_key.encode(), owner.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, owner: str) -> str:
        raw = base64.b64decode(sealed)
        for aead in self._openers[:-1]:
            try:
                return aead.decrypt(raw[:12], raw[12:], owner.encode()).decode()
            except InvalidTag:
                continue
        return self._openers[-1].decrypt(raw[:12], raw[12:], owner.encode()).decode()
