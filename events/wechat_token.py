"""The WeChat access token, shared by every gateway instance through JetStream KV.

stable_token exists so that instances need not invalidate each other's tokens; sharing the cached
token on top means N instances make one fetch, not N. A KV `create` acts as a short lock so only
one instance refreshes at a time; a holder that dies leaves a lock that simply expires.
"""

from __future__ import annotations

import time

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from events.records import AccessTokenRecord

TOKEN_KEY = "access_token"
LOCK_KEY = "access_token.refreshing"
LOCK_STALE_S = 15.0  # longer than one stable_token call with its retries


class SharedTokenStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._decoder = msgspec.json.Decoder(AccessTokenRecord)

    async def get(self) -> AccessTokenRecord | None:
        try:
            entry = await self._kv.get(TOKEN_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        return self._decoder.decode(entry.value) if entry.value else None

    async def put(self, token: AccessTokenRecord) -> None:
        await self._kv.put(TOKEN_KEY, msgspec.json.encode(token))

    async def clear(self) -> None:
        await self._kv.purge(TOKEN_KEY)

    async def try_lock(self, holder: str, *, now_s: float | None = None) -> bool:
        """Become the one refresher; a lock older than LOCK_STALE_S is taken over."""
        now_s = time.time() if now_s is None else now_s
        record = f"{holder} {now_s}".encode()
        try:
            await self._kv.create(LOCK_KEY, record)
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(LOCK_KEY)
        except (KeyNotFoundError, KeyDeletedError):
            return False  # released meanwhile: let the caller look at the token again
        held_since_s = float((entry.value or b"0 0").split()[-1])
        if now_s - held_since_s < LOCK_STALE_S:
            return False
        try:
            await self._kv.update(LOCK_KEY, record, last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def unlock(self) -> None:
        await self._kv.purge(LOCK_KEY)
