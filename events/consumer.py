"""Running a durable pull consumer: fetch, decode, hand to a handler, stop cleanly.

The handler owns the ack decision (ack, nak with delay, term). If it raises, the message is nak'ed
with a delay, so JetStream redelivers it until the consumer's max_deliver: nothing is swallowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg

from events.bus import EventBus
from events.envelope import Envelope, MalformedEvent, decode_envelope

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Msg], Awaitable[None]]

_FETCH_WAIT_S = 1.0
_RETRY_DELAY_S = 2.0


class ConsumerLoop:
    """One loop over one durable consumer; `stop()` lets the message in hand finish first."""

    def __init__(self, bus: EventBus, consumer: str, handler: Handler, *, batch: int = 1) -> None:
        self._bus = bus
        self._consumer = consumer
        self._handler = handler
        self._batch = batch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self._consumer}")

    async def stop(self, *, grace_s: float = 30.0) -> None:
        """Stop fetching, wait up to `grace_s` for the message in hand, then cancel."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:
            log.warning("consumer %s did not finish within %.0f s; cancelling", self._consumer, grace_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        subscription = await self._bus.pull_subscription(self._consumer)
        log.info("consuming %s", self._consumer)
        try:
            while not self._stopping.is_set():
                try:
                    messages = await subscription.fetch(self._batch, timeout=_FETCH_WAIT_S)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    break
                for msg in messages:
                    await self._deliver(msg)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = decode_envelope(msg.data)
        except MalformedEvent as exc:
            log.error("%s: dropping malformed message on %s: %s", self._consumer, msg.subject, exc)
            await msg.term()
            return
        try:
            await self._handler(event, msg)
        except asyncio.CancelledError:
            # Stopped past the grace period: hand the job back now rather than after ack_wait.
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
            raise
        except Exception:
            log.exception("%s: handling %s %s failed; will retry", self._consumer, event.type, event.id)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=_RETRY_DELAY_S)


@contextlib.asynccontextmanager
async def consuming(
    bus: EventBus, consumer: str, handler: Handler, *, grace_s: float = 30.0
) -> AsyncIterator[ConsumerLoop]:
    """Run a consumer loop for the duration of the block."""
    loop = ConsumerLoop(bus, consumer, handler)
    loop.start()
    try:
        yield loop
    finally:
        await loop.stop(grace_s=grace_s)
