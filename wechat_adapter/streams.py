"""Long-lived responses within bounds: at most STREAMS_PER_USER open per user (across every gateway
instance), at most STREAMS_PER_GATEWAY in this process, none longer than STREAM_MAX_LIFETIME_S.

Each open stream (server-sent events today; audio streams and WebSockets share the same counter) holds
a lease in KV (`SharedState.streams`) and, on the server, a KV watch: without a cap one user could
hold thousands of server-side consumers. The lifetime bound ends streams a client forgot; a client
that still wants updates reconnects and gets the current state first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import nats.errors

from wechat_adapter.backpressure import SlotsFull
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError

log = logging.getLogger(__name__)

STREAMS_PER_GATEWAY = 1000
STREAM_MAX_LIFETIME_S = 600.0
# Well inside the lease bucket's 60 s TTL, so a slow renewal never lets a live lease expire.
LEASE_RENEW_S = 20.0
_TOO_MANY_RETRY_AFTER_S = 5


class OpenStream:
    """A stream's lease while it is open: renewed by `keep()`, expired after the lifetime bound."""

    def __init__(self, gateway: Gateway, owner: str, lease_id: str) -> None:
        self._gateway = gateway
        self._owner = owner
        self.lease_id = lease_id
        now = time.monotonic()
        self._ends_at = now + STREAM_MAX_LIFETIME_S
        self._renew_at = now + LEASE_RENEW_S

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._ends_at

    async def keep(self) -> None:
        """Renew the lease when due; call it from the stream's loop (it is cheap when not due)."""
        if time.monotonic() < self._renew_at:
            return
        self._renew_at = time.monotonic() + LEASE_RENEW_S
        try:
            await self._gateway.state.streams.renew(self._owner, self.lease_id)
        except (nats.errors.Error, TimeoutError) as exc:  # the next renewal tries again, well in time
            log.warning("stream lease %s not renewed: %r", self.lease_id, exc)


@contextlib.asynccontextmanager
async def open_stream(gateway: Gateway, caller: Caller) -> AsyncIterator[OpenStream]:
    """Hold one of the caller's stream slots for the block; `too_many_streams` (429) when they have
    STREAMS_PER_USER open, `overloaded` (503) when this gateway has STREAMS_PER_GATEWAY."""
    try:
        with gateway.stream_slots.take():
            limit = gateway.settings.streams_per_user
            lease_id = await gateway.state.streams.open(caller.owner, limit)
            if lease_id is None:
                raise ApiError(
                    "too_many_streams",
                    detail=f"{limit} streams open",
                    retry_after_s=_TOO_MANY_RETRY_AFTER_S,
                )
            try:
                yield OpenStream(gateway, caller.owner, lease_id)
            finally:
                try:
                    await gateway.state.streams.close(caller.owner, lease_id)
                except (nats.errors.Error, TimeoutError) as exc:  # it expires within a minute anyway
                    log.warning("stream lease %s not closed: %r", lease_id, exc)
    except SlotsFull:
        raise ApiError("overloaded", detail="this gateway's streams are all in use") from None
