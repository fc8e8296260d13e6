"""Speaker embeddings with Resemblyzer's encoder, which ships its weights in the wheel.

One encoder per process, loaded on first use and warmed up there: librosa's first mel spectrogram
compiles numba code (seconds), which belongs at start-up, not in the first user's task.
Blocking throughout: call it from an executor, never from the event loop.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from common.audio import Pcm, resample

if TYPE_CHECKING:
    from resemblyzer import VoiceEncoder

ENCODER_RATE_HZ = 16000  # Resemblyzer's sampling rate
MIN_EMBED_S = 1.0  # shorter audio gives an unreliable embedding; it is padded with silence up to this


class SpeakerEncoder:
    """Turns speech into a unit-length 256-d vector; the cosine of two is their speaker similarity."""

    def __init__(self, encoder: VoiceEncoder) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()  # torch modules are not safe to call from two threads at once

    @classmethod
    def load(cls) -> SpeakerEncoder:
        from resemblyzer import VoiceEncoder  # imports torch: only where embeddings are wanted

        encoder = cls(VoiceEncoder(device="cpu", verbose=False))
        encoder.embed(Pcm(np.zeros(ENCODER_RATE_HZ * 2, dtype=np.float32), ENCODER_RATE_HZ))  # warm up
        return encoder

    def embed(self, pcm: Pcm) -> np.ndarray:
        samples = resample(pcm, ENCODER_RATE_HZ)
        if len(samples) < MIN_EMBED_S * ENCODER_RATE_HZ:
            samples = np.pad(samples, (0, int(MIN_EMBED_S * ENCODER_RATE_HZ) - len(samples)))
        with self._lock:
            vector = self._encoder.embed_utterance(samples.astype(np.float32))
        return np.asarray(vector, dtype=np.float32)

    def similarity(self, a: Pcm, b: Pcm) -> float:
        return cosine(self.embed(a), self.embed(b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


_shared: SpeakerEncoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> SpeakerEncoder:
    """The process's encoder (loaded once; about 2 s the first time)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SpeakerEncoder.load()
        return _shared
