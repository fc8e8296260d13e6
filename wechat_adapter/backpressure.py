"""Refusing work the gateway cannot finish in reasonable time: how deep the job queue is, and how
many uploads this process is decoding.

Reading the consumer's pending count is one JetStream API call; under a burst it is cached for a
second so a thousand submissions do not become a thousand API calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from events import names
from events.bus import EventBus

_CACHE_S = 1.0


class QueueGauge:
    def __init__(self, bus: EventBus, *, consumer: str = names.WORKER_CONSUMER) -> None:
        self._bus = bus
        self._consumer = consumer
        self._lock = asyncio.Lock()
        self._value = 0
        self._read_at = float("-inf")

    async def pending(self) -> int:
        """Jobs published and not yet handed to a worker (at most a second old)."""
        async with self._lock:
            if time.monotonic() - self._read_at > _CACHE_S:
                info = await self._bus.js.consumer_info(names.STREAM, self._consumer)
                self._value, self._read_at = info.num_pending, time.monotonic()
            return self._value


class SlotsFull(Exception):
    """Every slot is taken: refuse now rather than queue (a queue of 5 MB uploads is memory)."""


class Slots:
    """At most `limit` of something at once in this process; the next one is refused at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a slot limit must be positive")
        self.limit = limit
        self.in_use = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        """One slot for the block; raises SlotsFull when none is free."""
        if self.in_use >= self.limit:
            raise SlotsFull(f"all {self.limit} slots are in use")
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
