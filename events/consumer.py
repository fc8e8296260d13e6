"""Running a durable pull consumer: fetch, decode, hand to a handler, stop cleanly.

The handler owns the ack decision (ack, nak with delay, term). If it raises, the message is nak'ed
with a delay, so JetStream redelivers it until the consumer's max_deliver: nothing is swallowed.
Two kinds of message are consumed: events of the log (`event_consumer`) and dead letters, the jobs a
work consumer gave up on (`dead_letter_consumer`). Loops run under an `events.supervision.Supervisor`.
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
from events.retry import RetryPolicy
from events.supervision import Supervisor

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[Envelope, Msg], Awaitable[None]]

_FETCH_WAIT_S = 1.0
_RETRY_DELAY_S = 2.0  # after a failed fetch: the consumer is fine, the connection is not (yet)
# A handler that raised: its message comes back after 1, 2, 4 … 60 s, so the consumer's ten
# deliveries ride out about four minutes of trouble (a NATS blip, a leader election) before the
# message becomes a dead letter, instead of twenty seconds at a fixed delay.
HANDLER_RETRY = RetryPolicy(first_delay_s=1.0, max_delay_s=60.0, give_up_after=10)


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
    """One loop over one durable consumer, as supervised work: `run(stopping)` fetches until the
    event is set, and lets the message in hand finish first.

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
        self.consumer = consumer
        self._handler = handler
        self._decode = decode
        self._batch = batch
        self._stopping = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        subscription = await self._bus.pull_subscription(self.consumer)
        log.info("consuming %s", self.consumer)
        try:
            while not stopping.is_set():
                try:
                    messages = await subscription.fetch(self._batch, timeout=_FETCH_WAIT_S)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    if stopping.is_set():
                        break
                    raise
                except nats.errors.Error as exc:
                    # A lost node, a leader election, a reconnect in progress: the durable consumer is
                    # still there, so ask again shortly instead of ending the loop.
                    log.warning("%s: fetch failed (%s); retrying", self.consumer, exc)
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
            log.error("%s: dropping message %d on %s: %s", self.consumer, seq, msg.subject, exc)
            await msg.term()
            return
        except nats.errors.Error as exc:
            log.warning("%s: could not read message %d (%s); will retry", self.consumer, seq, exc)
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
            delay_s = HANDLER_RETRY.delay_s(msg.metadata.num_delivered)
            log.exception(
                "%s: handling message %d on %s failed; retrying in %.0f s",
                self.consumer,
                seq,
                msg.subject,
                delay_s,
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=delay_s)


def event_consumer(bus: EventBus, consumer: str, handler: Handler) -> ConsumerLoop[Envelope]:
    """A loop over events of the log, for a Supervisor to run."""
    return ConsumerLoop(bus, consumer, handler, _decode_event)


def dead_letter_consumer(
    bus: EventBus, consumer: str, handler: DeadLetterHandler
) -> ConsumerLoop[DeadLetter]:
    """A loop over max-deliveries advisories (names.DEADLETTER_STREAM), for a Supervisor to run."""
    return ConsumerLoop(bus, consumer, handler, _decode_dead_letter)


@contextlib.asynccontextmanager
async def consuming(
    bus: EventBus, consumer: str, handler: Handler, *, grace_s: float = 30.0
) -> AsyncIterator[Supervisor]:
    """Run one consumer over events of the log for the duration of the block."""
    async with Supervisor(consumer) as supervisor:
        supervisor.start(consumer, event_consumer(bus, consumer, handler).run, grace_s=grace_s)
        yield supervisor
