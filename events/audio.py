"""Audio of running jobs, chunk by chunk, from the worker to whichever gateway streams it to a client.

Chunks never enter the audit stream: they live in their own short-lived stream (memory storage,
`AUDIO_MAX_AGE_S`), so a client that connects late or reconnects still gets the audio from its first
sample, and nothing of a user's voice stays in NATS for long.

Wire format, one message per chunk on `audio.<owner>.<task_id>.<attempt>`:
- payload: s16le mono PCM; empty on the end marker;
- headers `Audio-Seq` (0, 1, … within the attempt), `Audio-Rate` (Hz), `Audio-End: 1` on the marker
  that closes an attempt's audio, and `Nats-Msg-Id`, so a retried publish is stored once.
The attempt is the job's delivery number: a redelivered job's chunks never mix with the dead
attempt's, and a reader tells them apart by subject (`read_audio`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats.errors
import numpy as np
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from common.audio import Pcm
from events import names

log = logging.getLogger(__name__)

# A client that reconnects within this long still hears its audio from the first sample; a finished
# task's later streams read the stored file instead.
AUDIO_MAX_AGE_S = 600.0
AUDIO_MAX_BYTES = 512 * 1024 * 1024  # memory: at 48 KB per second of 24 kHz audio, about 3 hours
MAX_CHUNK_BYTES = 128 * 1024  # under NATS's 1 MB max payload with room; about 2.7 s at 24 kHz

_SEQ, _RATE, _END = "Audio-Seq", "Audio-Rate", "Audio-End"


def audio_stream_config(replicas: int) -> StreamConfig:
    return StreamConfig(
        name=names.AUDIO_STREAM,
        subjects=list(names.AUDIO_STREAM_SUBJECTS),
        storage=StorageType.MEMORY,
        max_age=AUDIO_MAX_AGE_S,
        max_bytes=AUDIO_MAX_BYTES,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas,
        duplicate_window=60.0,
    )


@dataclass(frozen=True, slots=True)
class AudioChunk:
    attempt: int
    seq: int
    sample_rate_hz: int
    pcm: bytes  # s16le mono
    end: bool = False  # the attempt's audio is complete (this chunk carries none)

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


def to_s16le(pcm: Pcm) -> bytes:
    """Float samples in [-1, 1] as s16le bytes, as the stream and `format=pcm` clients carry them."""
    return (np.clip(pcm.samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class AudioPublisher:
    """Publishes one attempt's audio in order; `end()` closes it. A failed publish is logged and ends
    this attempt's chunks (the stored file stays the truth: readers fall back to it)."""

    def __init__(self, js: JetStreamContext, owner: str, task_id: str, attempt: int) -> None:
        self._js = js
        self._subject = names.audio_subject(owner, task_id, attempt)
        self._seq = 0
        self.broken = False

    async def publish(self, pcm: Pcm) -> None:
        data = to_s16le(pcm)
        for start in range(0, len(data), MAX_CHUNK_BYTES):
            await self._send(data[start : start + MAX_CHUNK_BYTES], pcm.sample_rate_hz)

    async def end(self, sample_rate_hz: int) -> None:
        await self._send(b"", sample_rate_hz, end=True)

    async def _send(self, data: bytes, rate_hz: int, *, end: bool = False) -> None:
        if self.broken:
            return
        headers = {
            "Nats-Msg-Id": f"{self._subject}.{self._seq}",
            _SEQ: str(self._seq),
            _RATE: str(rate_hz),
        }
        if end:
            headers[_END] = "1"
        try:
            await self._js.publish(self._subject, data, stream=names.AUDIO_STREAM, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            self.broken = True
            log.warning("audio chunks of %s stop at %d: %r", self._subject, self._seq, exc)
            return
        finally:
            _raise_if_cancelled()
        self._seq += 1


def _raise_if_cancelled() -> None:
    """nats-py's publish can swallow the cancellation of the task awaiting it (its flush catches
    CancelledError); a job cancelled at shutdown must still stop, so the cancellation is raised here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(frozen=True, slots=True)
class Superseded:
    """A newer attempt started after some of an older one's audio was read: the reader stops there."""

    attempt: int


async def read_audio(
    js: JetStreamContext, owner: str, task_id: str, *, wait_s: float
) -> AsyncIterator[AudioChunk | Superseded | None]:
    """The task's audio chunks in order, from its first sample, as they are published.

    Yields None when nothing came for `wait_s` (the caller checks on the task and may stop), and
    ends after an end marker. Chunks of one attempt only: before any audio was read, a newer attempt
    replaces an older one; after, a newer attempt yields Superseded and the audio ends, because a
    redelivered job may say the same words differently and the two must never be spliced together.
    """
    subjects = names.audio_subjects(owner, task_id)
    # Attempts older than the newest one published so far are dead: a listener who connects after a
    # redelivery starts with the new attempt's audio, not with what the dead one left.
    try:
        newest = await js.get_last_msg(names.AUDIO_STREAM, subjects)
        current = int((newest.subject or "").rsplit(".", 1)[1])
    except NotFoundError:
        current = 0
    # An ordered consumer runs with flow control: while the listener reads slowly, the server holds the
    # chunks back (they stay in the stream) instead of this process buffering them without bound.
    subscription = await js.subscribe(
        subjects,
        stream=names.AUDIO_STREAM,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    read_any = False
    try:
        while True:
            try:
                msg = await subscription.next_msg(timeout=wait_s)
            except (TimeoutError, nats.errors.TimeoutError):
                yield None
                continue
            attempt = int(msg.subject.rsplit(".", 1)[1])
            if attempt < current:
                continue  # a dead attempt's late chunk
            if attempt > current:
                if read_any:
                    yield Superseded(attempt)
                    return
                current = attempt
            headers = msg.headers or {}
            seq, rate_hz = int(headers.get(_SEQ, 0)), int(headers.get(_RATE, 0))
            chunk = AudioChunk(attempt, seq, rate_hz, msg.data, end=bool(headers.get(_END)))
            if chunk.end:
                yield chunk
                return
            read_any = read_any or chunk.samples > 0
            yield chunk
    finally:
        try:
            await subscription.unsubscribe()
        except nats.errors.Error as exc:  # the server drops the ephemeral consumer anyway
            log.debug("audio subscription of %s not closed: %r", task_id, exc)


async def purge_audio(js: JetStreamContext, owner: str, task_id: str = "*") -> None:
    """Erasure: the audio chunks of the owner's task (`*`: of all their tasks), gone from the stream."""
    await js.purge_stream(names.AUDIO_STREAM, subject=names.audio_subjects(owner, task_id))
