"""A task's audio for a listener, from its first sample, in whatever state the task is.

- Queued, under review or running: the chunks the worker publishes as it synthesises
  (events/audio.py), from the first one, including the audible AIGC label at the end; the audio ends
  with the worker's end marker, so it is exactly what the stored file holds.
- Succeeded: the stored file, decoded, at once.
- Failed or rejected: nothing; the task says why.

A job that is redelivered (its worker died) starts its audio again under a new attempt number. If
none of the dead attempt's audio was heard yet, the listener gets the new attempt's; otherwise the
audio ends there, because the new attempt may say the same words differently (CosyVoice3 samples)
and splicing the two would be heard. The task still completes, and its `audio_url` has the whole file.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from common.audio import Mp3Encoder, Pcm, decode_audio
from events.audio import Superseded, read_audio, to_s16le
from events.records import TaskRecord, TaskStatus
from storage.objects import ObjectNotFound
from wechat_adapter.context import Gateway

log = logging.getLogger(__name__)

# How long a listener waits for a chunk before it looks at the task again (a failed job publishes no
# end marker; a finished task's chunks may have expired). Also how soon it notices the gateway stop.
CHECK_S = 1.0
STREAM_FORMATS = ("mp3", "pcm")


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a task's audio ended: "complete"; "failed" (the task says why); "cut_short" (a new attempt
    began after some audio was heard, or chunks were lost: the stored file, `audio_url`, has it all);
    "gone" (the task was deleted)."""

    reason: str

    @property
    def complete(self) -> bool:
        return self.reason == "complete"


async def task_audio(gateway: Gateway, task: TaskRecord) -> AsyncIterator[Pcm | Ending | None]:
    """The task's audio as float PCM pieces, in order, then one Ending. None, about every CHECK_S
    while nothing comes, lets the caller check on its client and renew its stream's lease."""
    if task.status == TaskStatus.SUCCEEDED:
        yield await stored_audio(gateway, task)
        yield Ending("complete")
        return
    if task.status.is_final:
        yield Ending("failed")
        return
    heard = False
    async for item in read_audio(gateway.bus.js, task.owner, task.task_id, wait_s=CHECK_S):
        if isinstance(item, Superseded):
            yield Ending("cut_short")
            return
        if item is None:  # nothing for a while: has the task ended without (more) chunks?
            current = await gateway.state.tasks.get(task.owner, task.task_id)
            if current is None:
                yield Ending("gone")
                return
            if current.status == TaskStatus.SUCCEEDED:
                if not heard:  # its chunks expired, or the task was a cached result
                    yield await stored_audio(gateway, current)
                yield Ending("cut_short" if heard else "complete")
                return
            if current.status.is_final:
                yield Ending("failed")
                return
            yield None
            continue
        if item.end:
            yield Ending("complete")
            return
        if item.samples:
            heard = True
            samples = np.frombuffer(item.pcm, dtype="<i2").astype(np.float32) / 32768.0
            yield Pcm(samples, item.sample_rate_hz)


async def stored_audio(gateway: Gateway, task: TaskRecord) -> Pcm:
    """The task's stored file, decoded (in the audio executor)."""
    try:
        stored = await gateway.store.get(task.audio_key or "")
    except ObjectNotFound:
        log.warning("task %s succeeded but its audio is gone", task.task_id)
        return Pcm(np.zeros(0, np.float32), 24_000)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(gateway.audio_executor, decode_audio, stored)


class StreamEncoder:
    """Pieces of PCM in the stream's format: s16le (`pcm`) or MP3 frames encoded as they come (`mp3`).
    Encoding runs in the gateway's audio executor, never on the event loop."""

    def __init__(self, gateway: Gateway, audio_format: str) -> None:
        if audio_format not in STREAM_FORMATS:
            raise ValueError(f"stream format must be one of {STREAM_FORMATS}")
        self._executor = gateway.audio_executor
        self.audio_format = audio_format
        self._mp3: Mp3Encoder | None = None

    async def encode(self, pcm: Pcm) -> bytes:
        if self.audio_format == "pcm":
            return to_s16le(pcm)
        if self._mp3 is None:
            self._mp3 = Mp3Encoder(pcm.sample_rate_hz)
        frames = await asyncio.get_running_loop().run_in_executor(self._executor, self._mp3.encode, pcm)
        return b"".join(frames)

    async def finish(self) -> bytes:
        if self._mp3 is None:
            return b""
        return b"".join(await asyncio.get_running_loop().run_in_executor(self._executor, self._mp3.finish))
