"""Reading the audit log back: an ordered consumer over the stream, from a start time, to now."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime

import msgspec
import nats.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from common.ids import id_time_s
from events import names
from events.bus import EventBus
from events.envelope import Envelope, MalformedEvent, decode_envelope
from events.sealing import UserKeys, is_sealed, open_fields

_IDLE_S = 1.0
# Ids carry their creation time; start a little earlier in case clocks of two hosts differ.
_CLOCK_SLACK_S = 60.0


async def read_events(
    bus: EventBus,
    *,
    since_s: float | None = None,
    subjects: str = "tts.>",
    accept: Callable[[Envelope], bool] = lambda _: True,
) -> AsyncIterator[Envelope]:
    """Events in stream order from `since_s` (epoch seconds; the beginning when None) up to now."""
    info = await bus.js.stream_info(names.STREAM)
    last_seq = info.state.last_seq
    if last_seq == 0:
        return
    if since_s is None:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    else:
        start = datetime.fromtimestamp(since_s, UTC).isoformat().replace("+00:00", "Z")
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
    subscription = await bus.js.subscribe(subjects, stream=names.STREAM, ordered_consumer=True, config=config)
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=_IDLE_S)
            except nats.errors.TimeoutError:
                return  # nothing at or after the start time
            with contextlib.suppress(MalformedEvent):
                event = decode_envelope(msg.data)
                if accept(event):
                    yield event
            if msg.metadata.sequence.stream >= last_seq or msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()


async def follow_events(
    bus: EventBus, *, subjects: str = "tts.>", on_subscribed: Callable[[], None] = lambda: None
) -> AsyncIterator[Envelope]:
    """Events as they are published from now on; runs until the caller stops iterating."""
    config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
    subscription = await bus.js.subscribe(subjects, stream=names.STREAM, ordered_consumer=True, config=config)
    on_subscribed()
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=_IDLE_S)
            except nats.errors.TimeoutError:
                continue
            with contextlib.suppress(MalformedEvent):
                yield decode_envelope(msg.data)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()


async def task_timeline(bus: EventBus, task_id: str) -> list[Envelope]:
    """Every event of one task, in the order the stream recorded them."""
    created_s = id_time_s(task_id)
    since_s = None if created_s is None else created_s - _CLOCK_SLACK_S
    return [e async for e in read_events(bus, since_s=since_s, accept=lambda e: e.task_id == task_id)]


async def open_sealed(events: Iterable[Envelope], keys: UserKeys) -> list[Envelope]:
    """The events with their sealed fields opened: the text, or `[erased]` once its owner's key is
    gone (events/sealing.py). One key lookup per owner."""
    found: dict[str, bytes | None] = {}
    opened = []
    for event in events:
        if any(map(is_sealed, event.data.values())):
            if event.openid not in found:
                found[event.openid] = await keys.find(event.openid)
            event = msgspec.structs.replace(
                event, data=open_fields(event.data, found[event.openid], event.openid)
            )
        opened.append(event)
    return opened


_TEXT_SHOWN_CHARS = 40


def describe(event: Envelope) -> str:
    """One line for a human: time, type and the fields that matter for that type (a text as
    `open_sealed` left it, shortened)."""
    keys = (
        "text",
        "attempt",
        "engine",
        "duration_s",
        "real_time_factor",
        "speaker_similarity",
        "speaker_profile",
        "audio_key",
        "suggest",
        "label",
        "errcode",
        "errmsg",
        "media_trace_id",
        "voices",  # tts.user.erased: what went
        "tasks",
        "objects",
    )
    fields = [f"{k}={_shown(event.data[k])}" for k in keys if event.data.get(k) not in (None, "")]
    if isinstance(event.data.get("error"), dict):
        fields.append(f"error={event.data['error'].get('code')}")
    if isinstance(event.data.get("timings_ms"), dict):  # tts.synthesis.completed: where the job's time went
        fields.append(f"timings_ms={_timings(event.data['timings_ms'])}")
    subject = event.task_id or event.voice_id or ""
    return f"{event.time}  {event.type:<26} {subject}  {' '.join(fields)}  trace={event.trace_id}".rstrip()


def _timings(timings: dict[str, object]) -> str:
    """`queue:12,fetch_prompt:0.4,…,total:640`: milliseconds, whole from 10 up."""
    shown = []
    for name, value in timings.items():
        if isinstance(value, int | float):
            shown.append(f"{name}:{value:.0f}" if abs(value) >= 10 else f"{name}:{value:.1f}")
    return ",".join(shown)


def _shown(value: object) -> str:
    if is_sealed(value):
        return "[sealed]"
    text = str(value)
    return text if len(text) <= _TEXT_SHOWN_CHARS else text[: _TEXT_SHOWN_CHARS - 1] + "…"
