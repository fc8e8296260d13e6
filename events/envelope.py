"""The versioned envelope every event on the stream carries, and its JSON form (docs/ARCHITECTURE.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from common.ids import new_id
from events.names import EventType

ENVELOPE_VERSION = 1


class Envelope(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event: who, what, when; `data` holds the type's own fields."""

    id: str
    type: str
    version: int
    time: str
    openid: str
    trace_id: str
    task_id: str | None = None
    voice_id: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def subject(self) -> str:
        return self.type

    def to_json(self) -> bytes:
        return _encoder.encode(self)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


class MalformedEvent(ValueError):
    """A message on the stream that is not a valid envelope."""


def decode_envelope(payload: bytes) -> Envelope:
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise MalformedEvent(str(exc)) from exc


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event(
    event_type: EventType,
    *,
    openid: str,
    trace_id: str,
    task_id: str | None = None,
    voice_id: str | None = None,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> Envelope:
    """A new envelope. Pass `event_id` when a retry must dedupe to the same event (Nats-Msg-Id)."""
    return Envelope(
        id=event_id or new_id("e"),
        type=str(event_type),
        version=ENVELOPE_VERSION,
        time=utc_now_iso(),
        openid=openid,
        trace_id=trace_id,
        task_id=task_id,
        voice_id=voice_id,
        data=data or {},
    )
