"""Stand-in recordings: real speech from espeak-ng, for the demo, benchmarks and tests."""

from __future__ import annotations

import functools

import numpy as np

from common.audio import Pcm, encode_audio
from common.vocabulary import ZERO_SHOT
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.espeak import EspeakEngine

SAMPLE_TEXT = "今天天气很好，我们一起去公园散步吧。我喜欢听音乐，也喜欢看书。"


@functools.cache
def _engine() -> EspeakEngine:
    return EspeakEngine()


def speech(text: str = SAMPLE_TEXT, *, speed: float = 1.0) -> Pcm:
    """Mandarin speech (about 0.25 s per character at speed 1)."""
    no_prompt = Pcm(np.zeros(16000, dtype=np.float32), 16000)  # espeak ignores the prompt
    request = SynthesisRequest(
        text=text, mode=ZERO_SHOT, prompt=no_prompt, prompt_text="", speaker_key="samples", speed=speed
    )
    return _engine().synthesize(request)


def speech_sample(audio_format: str = "wav", text: str = SAMPLE_TEXT) -> bytes:
    """A recording as the mini program uploads it: `aac` is M4A, as RecorderManager writes."""
    return encode_audio(speech(text), audio_format)
