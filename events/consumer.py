"""Running a durable pull consumer: fetch, decode, hand to a handler, stop cleanly.

The handler owns the ack decision (ack, nak with delay, term). If it raises, the message is nak'ed
with a delay, so JetStream redelivers it until the consumer's max_deliver: nothing is swallowed.
Two kinds of message are consumed: events of the log (`consuming`) and dead letters, the jobs a work
consumer gave up on (`consuming_dead_letters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from events.bus import EventBus
from events.envelope import Envelope, MalformedEvent, decode_envelope

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[Envelope, Msg], Awaitable[None]]

_FETCH_WAIT_S = 1.0
_RETRY_DELAY_S = 2.0


class DeadLetter(msgspec.Struct, frozen=True):
    """A job a work consumer stopped redelivering: the original event and where it sat in its stream."""

    event: Envelope
    stream: str
    stream_seq: int
    consumer: str
    deliveries: int


DeadLetterHandler = Callable[[DeadLetter, Msg], Awaitable[None]]


class _MaxDeliveriesAdvisory(msgspec.Struct):
    """JetStream's `io.nats.jetstream.advisory.v1.max_deliver` (the fields we use)."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


_advisory_decoder = msgspec.json.Decoder(_MaxDeliveriesAdvisory)


async def _decode_event(bus: EventBus, msg: Msg) -> Envelope:
    return decode_envelope(msg.data)


async def _decode_dead_letter(bus: EventBus, msg: Msg) -> DeadLetter:
    """The advisory names the message by stream sequence; the event itself is read back from the log."""
    try:
        advisory = _advisory_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise MalformedEvent(f"not a max-deliveries advisory: {exc}") from exc
    try:
        original = await bus.js.get_msg(advisory.stream, advisory.stream_seq)
    except NotFoundError as exc:  # aged out of the log or deleted: nothing left to act on
        raise MalformedEvent(f"{advisory.stream} message {advisory.stream_seq} is gone") from exc
    return DeadLetter(
        event=decode_envelope(original.data or b""),
        stream=advisory.stream,
        stream_seq=advisory.stream_seq,
        consumer=advisory.consumer,
        deliveries=advisory.deliveries,
    )


class ConsumerLoop(Generic[T]):
    """One loop over one durable consumer; `stop()` lets the message in hand finish first.

    `decode` turns a message into what the handler takes; MalformedEvent from it ends the message.
    """

    def __init__(
        self,
        bus: EventBus,
        consumer: str,
        handler: Callable[[T, Msg], Awaitable[None]],
        decode: Callable[[EventBus, Msg], Awaitable[T]],
        *,
        batch: int = 1,
    ) -> None:
        self._bus = bus
        self._consumer = consumer
        self._handler = handler
        self._decode = decode
        self._batch = batch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running loop (done only after `stop()`, or if the loop itself broke)."""
        return self._task

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
                except nats.errors.Error as exc:
                    # A lost node, a leader election, a reconnect in progress: the durable consumer is
                    # still there, so ask again shortly instead of ending the loop.
                    log.warning("%s: fetch failed (%s); retrying", self._consumer, exc)
                    await self._pause(_RETRY_DELAY_S)
                    continue
                for msg in messages:
                    await self._deliver(msg)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _deliver(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            item = await self._decode(self._bus, msg)
        except MalformedEvent as exc:
            log.error("%s: dropping message %d on %s: %s", self._consumer, seq, msg.subject, exc)
            await msg.term()
            return
        except nats.errors.Error as exc:
            log.warning("%s: could not read message %d (%s); will retry", self._consumer, seq, exc)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=_RETRY_DELAY_S)
            return
        try:
            await self._handler(item, msg)
        except asyncio.CancelledError:
            # Stopped past the grace period: hand the job back now rather than after ack_wait.
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
            raise
        except Exception:
            log.exception(
                "%s: handling message %d on %s failed; will retry", self._consumer, seq, msg.subject
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=_RETRY_DELAY_S)


@contextlib.asynccontextmanager
async def consuming(
    bus: EventBus, consumer: str, handler: Handler, *, grace_s: float = 30.0
) -> AsyncIterator[ConsumerLoop[Envelope]]:
    """Run a consumer loop over events of the log for the duration of the block."""
    async with _running(ConsumerLoop(bus, consumer, handler, _decode_event), grace_s) as loop:
        yield loop


@contextlib.asynccontextmanager
async def consuming_dead_letters(
    bus: EventBus, consumer: str, handler: DeadLetterHandler, *, grace_s: float = 30.0
) -> AsyncIterator[ConsumerLoop[DeadLetter]]:
    """Run a consumer loop over max-deliveries advisories (names.DEADLETTER_STREAM) for the block."""
    async with _running(ConsumerLoop(bus, consumer, handler, _decode_dead_letter), grace_s) as loop:
        yield loop


@contextlib.asynccontextmanager
async def _running(loop: ConsumerLoop[T], grace_s: float) -> AsyncIterator[ConsumerLoop[T]]:
    loop.start()
    try:
        yield loop
    finally:
        await loop.stop(grace_s=grace_s)
