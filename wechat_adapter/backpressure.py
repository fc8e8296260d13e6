"""How deep the job queue is, so the gateway can refuse work it cannot finish in reasonable time.

Reading the consumer's pending count is one JetStream API call; under a burst it is cached for a
second so a thousand submissions do not become a thousand API calls.
"""

from __future__ import annotations

import asyncio
import time

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
