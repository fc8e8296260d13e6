"""The interface between the worker and a speech engine: the request, the Engine protocol, wrappers.

An engine is loaded once per process (synth_worker.engines.registry) and called one request at a time
from the worker's single-thread executor: models and C libraries keep state that is not safe to share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from common.audio import Pcm
from common.presets import PRESETS_BY_ID
from common.vocabulary import INSTRUCT, MODES
from synth_worker.engines.errors import EngineInputError


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis; validated on construction so that an engine only sees well-formed requests."""

    text: str
    mode: str  # one of MODES
    prompt: Pcm = field(repr=False)  # the user's voice sample, mono, as stored (16-24 kHz)
    prompt_text: str  # its transcript (zero_shot)
    speaker_key: str  # owner + sample hash: the key of any speaker cache, never the transcript
    instruct: str | None = None  # a preset id from common.presets (mode "instruct" only)
    speed: float = 1.0
    language: str | None = None  # target language where the engine needs telling, e.g. "en"
    # What `SpeakerAdaptive.analyse_speaker` made of this prompt, when the engine adapts (cached
    # per owner + sample hash by the worker, so it is computed once per voice, not per task).
    speaker_profile: bytes | None = field(default=None, repr=False)
    # Which voice this is (`common.owners.owned_key(owner, voice_id)`), so that an engine keeping
    # state per voice can drop it when the voice is deleted (`ForgetsVoices`). None: not told.
    voice_key: str | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise EngineInputError("text is empty")
        if self.mode not in MODES:
            raise EngineInputError(f"unknown mode {self.mode!r}; expected one of {sorted(MODES)}")
        if (self.mode == INSTRUCT) != (self.instruct is not None):
            raise EngineInputError("mode 'instruct' needs a preset, and only it takes one")
        if self.instruct is not None and self.instruct not in PRESETS_BY_ID:
            raise EngineInputError(f"unknown preset {self.instruct!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise EngineInputError(f"speed must be a positive number, not {self.speed}")
        if not self.speaker_key:
            raise EngineInputError("speaker_key is empty")


class Engine(Protocol):
    name: str
    version: str  # reported with every result, e.g. "espeak-ng-1.52.0"
    sample_rate_hz: int

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        """Blocking; one call at a time per engine instance."""
        ...

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        """The same speech in pieces, each as soon as it is made (blocking between them). The engine is
        busy until the iterator is exhausted or closed; closing it early stops the synthesis."""
        ...


def speech_stream(engine: Engine, request: SynthesisRequest) -> Iterator[Pcm]:
    """`engine.synthesize_stream(request)`, or the whole speech as one piece from an engine without it."""
    stream = getattr(engine, "synthesize_stream", None)
    if callable(stream):
        return stream(request)
    return iter([engine.synthesize(request)])


class SpeakerAdaptive(Protocol):
    """An engine that analyses a voice once and reuses the analysis for every task of that voice."""

    profile_version: str  # part of the cache key: a new analysis method never reads an old profile

    def analyse_speaker(self, prompt: Pcm) -> bytes:
        """Blocking and deterministic: the same prompt gives the same bytes."""
        ...


def adapts_to_speaker(engine: Engine) -> SpeakerAdaptive | None:
    """The engine as SpeakerAdaptive when it is one (DelayedEngine passes through)."""
    inner = getattr(engine, "inner", engine)
    return inner if callable(getattr(inner, "analyse_speaker", None)) else None


class ForgetsVoices(Protocol):
    """An engine that keeps something per voice in memory (a registered speaker, prompt features)."""

    def forget_voice(self, owner: str, voice_id: str) -> int:
        """Drop what is kept of a deleted voice; how many entries went. Blocking: call it on the
        engine's executor, like `synthesize`. Requests name their voice in `voice_key`."""
        ...


def forgets_voices(engine: Engine) -> ForgetsVoices | None:
    """The engine as ForgetsVoices when it is one (DelayedEngine passes through)."""
    for candidate in (engine, getattr(engine, "inner", None)):
        if callable(getattr(candidate, "forget_voice", None)):
            return candidate
    return None


class DelayedEngine:
    """Another engine plus a fixed delay per call: stands in for GPU time (ENGINE_DELAY_S).

    The delay blocks the calling thread, as a model would, so benchmarks and fault tests see a slow
    job exactly as the worker will: the event loop free, the engine's one executor thread busy.
    """

    def __init__(self, inner: Engine, delay_s: float) -> None:
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"delay_s must be a non-negative number, not {delay_s}")
        self.inner = inner
        self.delay_s = delay_s
        self.name = inner.name
        self.version = inner.version
        self.sample_rate_hz = inner.sample_rate_hz

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        time.sleep(self.delay_s)
        return self.inner.synthesize(request)

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        """The delay before the first piece, as a model's time to first audio."""
        time.sleep(self.delay_s)
        yield from speech_stream(self.inner, request)
