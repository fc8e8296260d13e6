"""The interface between the worker and a speech engine, and the one place engines are chosen.

An engine is loaded once per process and called one request at a time from the worker's
single-thread executor: models and C libraries keep state that is not safe to share.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

from common.audio import Pcm
from common.presets import PRESETS_BY_ID

MODES = frozenset({"zero_shot", "instruct", "cross_lingual"})
ENGINE_NAMES = ("espeak", "cosyvoice3")


class EngineError(Exception):
    """Synthesis failed."""


class EngineInputError(EngineError):
    """This input can never succeed (a poison job): fail the task, do not retry it."""


class ProfileRejected(EngineInputError):
    """The speaker profile passed in is unusable (corrupt, or from another analysis): analyse again."""


class EngineUnavailable(EngineError):
    """The engine cannot start: a library or model is missing or broken."""


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis; validated on construction so that an engine only sees well-formed requests."""

    text: str
    mode: str  # one of MODES
    prompt: Pcm = field(repr=False)  # the user's voice sample, 16 kHz mono
    prompt_text: str  # its transcript (zero_shot)
    speaker_key: str  # owner + sample hash: the key of any speaker cache, never the transcript
    instruct: str | None = None  # a preset id from common.presets (mode "instruct" only)
    speed: float = 1.0
    language: str | None = None  # target language where the engine needs telling, e.g. "en"
    # What `SpeakerAdaptive.analyse_speaker` made of this prompt, when the engine adapts (cached
    # per owner + sample hash by the worker, so it is computed once per voice, not per task).
    speaker_profile: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise EngineInputError("text is empty")
        if self.mode not in MODES:
            raise EngineInputError(f"unknown mode {self.mode!r}; expected one of {sorted(MODES)}")
        if (self.mode == "instruct") != (self.instruct is not None):
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


def load_engine(name: str, *, model_dir: str | None = None) -> Engine:
    """Start the named engine (slow: run it in the engine's executor, once per process).

    Engine modules are imported here, not at the top, so a CPU worker never imports torch.
    Raises EngineUnavailable with a message fit for the operator.
    """
    if name == "espeak":  # model_dir is not used: espeak's data ships in its wheel
        try:
            from synth_worker.engines.espeak import EspeakEngine
        except ImportError as exc:
            raise EngineUnavailable(f"espeak engine cannot be imported: {exc}") from exc
        return EspeakEngine()
    if name == "cosyvoice3":  # imports torch and the upstream CosyVoice code only when loading
        from synth_worker.engines.cosyvoice3 import CosyVoice3Engine

        return CosyVoice3Engine.load(model_dir)
    raise EngineUnavailable(f"unknown engine {name!r}; expected one of {list(ENGINE_NAMES)}")


def probe_engine(name: str, *, model_dir: str | None = None) -> str:
    """Whether the named engine could start, without loading a model onto a GPU (for `ops doctor`).

    Returns a one-line description; raises EngineUnavailable as load_engine would.
    """
    if name == "cosyvoice3":
        from synth_worker.engines.cosyvoice3 import check_model_dir, import_upstream

        directory = check_model_dir(model_dir)
        import_upstream()
        return f"cosyvoice3: model files complete in {directory}, CosyVoice code importable (not loaded)"
    engine = load_engine(name, model_dir=model_dir)
    return f"{engine.name} {engine.version}, {engine.sample_rate_hz} Hz"
