"""The file a job stores: its speech, then the AIGC label's tail, encoded while the engine speaks.

A job's file is the engine's speech followed by the label's tail (synth_worker/labels.py: a pause
and the audible label, matched to the speech's loudness), with the implicit label in its metadata.
Encoding all of it after the engine's last piece was most of what a job added to the engine's time:
LAME takes about 9 ms per second of audio here, and the spoken label is 4.4 s. So an MP3 file (the
default format) is made in two runs of the encoder that never wait for the engine:

- **the speech**, encoded piece by piece as the engine hands the pieces over (`add`, then
  `encode_pending` on the worker's encode thread, while the engine makes the next piece);
- **the label's tail**, encoded once per process for each label, sample rate and loudness step
  (labels.GAIN_STEP_DB) and kept (`_TAILS`): the tails of a few steps serve every job.

`finish` flushes the speech's encoder and joins the two runs' frames (common.audio.mux_mp3), FFmpeg
writing the Info and LAME tags. Between the runs a decoder plays the speech run's padding and the
tail run's priming, both silence. The tail is encoded with the priming's length less pause, so the
pause before the label is GAP_S plus the speech run's padding (at most one frame: 26 ms at
22.05 kHz). `LabelledAudio.tail` is exactly that tail, for the job's stream: a stream and the stored
file have the same audio.

WAV and AAC (M4A) are encoded whole at the end, as before: WAV costs next to nothing, and MP4's
index comes first in the file (faststart), so its frames cannot simply be joined. So is speech at a
rate MP3 lacks (encode_audio resamples it).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from common.audio import Mp3Encoder, Mp3Run, Pcm, encode_audio, encode_mp3_run, mux_mp3
from synth_worker.labels import (
    GAP_S,
    explicit_label_at,
    implicit_metadata,
    label_gain_db,
    label_tail,
    paused,
    scaled,
)

# Encoded tails kept per process: (label, rate, gain step). A tail is about 40 KB; jobs whose speech
# is about as loud share one (a 6 dB range of loudness is 24 steps).
TAILS_KEPT = 64


@dataclass(frozen=True, slots=True)
class LabelledAudio:
    audio: bytes  # the file
    duration_s: float  # of the file's audio: the speech and its tail
    tail: Pcm | None  # what follows the speech in the file: the pause and the audible label


class OutputFile:
    """One job's file in `audio_format`, with the audible label `aigc_label` after the speech.

    `add` takes the engine's pieces as they come (any thread, never blocks for long); `encode_pending`
    encodes what has come (blocking, on the encode thread); `finish` makes the file of the whole
    speech (blocking). Encoding happens under a lock, so any executor keeps the pieces in order.
    """

    def __init__(self, audio_format: str, aigc_label: str, *, task_id: str, producer: str) -> None:
        self.audio_format, self.aigc_label = audio_format, aigc_label
        self._metadata = implicit_metadata(producer, task_id)
        self._pending: queue.SimpleQueue[Pcm] = queue.SimpleQueue()
        self._encoding = threading.Lock()
        self._encoder: Mp3Encoder | None = None
        self._frames: list[bytes] = []
        self._encoded_samples = 0

    def add(self, piece: Pcm) -> bool:
        """Queue a piece of the speech for `encode_pending`; whether it was (only MP3 files are
        encoded as they come)."""
        if not self._as_it_comes(piece):
            return False
        self._pending.put(piece)
        return True

    def encode_pending(self) -> None:
        """Encode the pieces queued so far, in order (blocking)."""
        with self._encoding:
            self._encode_queued()

    def finish(self, speech: Pcm) -> LabelledAudio:
        """The file of `speech` (every piece added, joined; or, with none added, encoded now) and
        its label (blocking)."""
        with self._encoding:
            if not self._as_it_comes(speech):
                return self._encode_whole(speech)
            self._encode_queued()
            if self._encoded_samples == 0:
                self._encode(speech)
            elif self._encoded_samples != speech.samples.size:
                raise ValueError(
                    f"{self._encoded_samples} samples encoded, but the speech has {speech.samples.size}"
                )
            assert self._encoder is not None
            self._frames.extend(self._encoder.finish())
            spoken = self._encoder.run(self._frames)
            label = explicit_label_at(self.aigc_label, speech.sample_rate_hz)
            if label is None:
                return LabelledAudio(mux_mp3([spoken], metadata=self._metadata), speech.duration_s, None)
            gain_db = label_gain_db(label, speech)
            audio = mux_mp3([spoken, encoded_tail(self.aigc_label, label, gain_db)], metadata=self._metadata)
            # The join plays the speech run's padding as pause, so the stream's tail has it too.
            pause = round(GAP_S * speech.sample_rate_hz) + spoken.padding_samples
            tail = paused(scaled(label, gain_db), pause)
            return LabelledAudio(audio, speech.duration_s + tail.duration_s, tail)

    def _as_it_comes(self, pcm: Pcm) -> bool:
        # At a rate MP3 lacks, `encode_audio` resamples the whole speech instead.
        return self.audio_format == "mp3" and Mp3Encoder.carries(pcm.sample_rate_hz)

    def _encode_queued(self) -> None:
        while True:
            try:
                piece = self._pending.get_nowait()
            except queue.Empty:
                return
            self._encode(piece)

    def _encode(self, piece: Pcm) -> None:
        if self._encoder is None:
            self._encoder = Mp3Encoder(piece.sample_rate_hz)
        self._frames.extend(self._encoder.encode(piece))
        self._encoded_samples += piece.samples.size

    def _encode_whole(self, speech: Pcm) -> LabelledAudio:
        tail = label_tail(speech, self.aigc_label)
        labelled = (
            speech
            if tail is None
            else Pcm(np.concatenate([speech.samples, tail.samples]), speech.sample_rate_hz)
        )
        audio = encode_audio(labelled, self.audio_format, metadata=self._metadata)
        return LabelledAudio(audio, labelled.duration_s, tail)


_tails_lock = threading.Lock()
_TAILS: OrderedDict[tuple[str, int, float], Mp3Run] = OrderedDict()  # least recently used first
_priming: dict[int, int] = {}  # rate -> the encoder's priming, in samples


def encoded_tail(kind: str, label: Pcm, gain_db: float) -> Mp3Run:
    """The MP3 run of `label` (the audible label `kind` at its speech's rate) at `gain_db`, after
    the pause that the join does not supply (GAP_S less this run's priming); encoded on first use,
    then kept."""
    rate_hz = label.sample_rate_hz
    key = (kind, rate_hz, gain_db)
    with _tails_lock:
        kept = _TAILS.get(key)
        if kept is not None:
            _TAILS.move_to_end(key)
            return kept
        if rate_hz not in _priming:
            _priming[rate_hz] = encode_mp3_run(Pcm(np.zeros(1, np.float32), rate_hz)).priming_samples
        pause = max(0, round(GAP_S * rate_hz) - _priming[rate_hz])
        run = encode_mp3_run(paused(scaled(label, gain_db), pause))
        _TAILS[key] = run
        while len(_TAILS) > TAILS_KEPT:
            _TAILS.popitem(last=False)
        return run


class FileEncoding:
    """The async side of an `OutputFile`: each piece's encoding goes to `executor` as the piece comes
    (an encode thread of its own, so that it overlaps the engine), and `finish` waits for it.

    An async context manager: leaving it waits for whatever encoding is still running, so none
    outlives the job (a failed job's encodings end in milliseconds; their errors are the job's)."""

    def __init__(self, output: OutputFile, executor: Executor) -> None:
        self._output, self._executor = output, executor
        self._running: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> FileEncoding:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.gather(*self._running, return_exceptions=True)

    def add(self, piece: Pcm) -> None:
        if self._output.add(piece):
            loop = asyncio.get_running_loop()
            self._running.append(loop.run_in_executor(self._executor, self._output.encode_pending))

    async def finish(self, speech: Pcm) -> LabelledAudio:
        await asyncio.gather(*self._running)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._output.finish, speech)
