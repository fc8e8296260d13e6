"""espeak's voice variants as candidate speakers, made deterministic, and their embeddings.

espeak-ng ships variants (m1–m7 male, f1–f5 female) that change its formants and pitch. The CPU
engine starts from the one that sounds most like the prompt, so each variant is rendered once per
process with a fixed sentence and embedded; the closest embedding wins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.audio import Pcm
from synth_worker.speaker.embedding import SpeakerEncoder, cosine

STEADY = "voicerelay-steady"  # espeak's default voice, steadied (see steady_variant_text)
_SHIPPED = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
_PREFIX = "voicerelay-"
# Flutter, roughness and breath draw on state that runs on from call to call (oscillator phases,
# rand()), so the same text would come out a few samples different each time; we set the first two
# to zero and drop breath. Our header replaces the shipped language and name lines.
_REPLACED_KEYWORDS = frozenset({"language", "name", "flutter", "roughness", "breath", "breathw"})

# Spoken by every variant to compare it with a prompt: long enough (about 8 s) for a stable
# embedding, with the tones and vowels of everyday Mandarin.
REFERENCE_SENTENCE = "今天天气很好，我们一起去公园散步吧。我喜欢听音乐，也喜欢看书。"


def candidate_names() -> tuple[str, ...]:
    """The variant names the engine can speak with, ours first."""
    return (STEADY, *(_PREFIX + name for name in _SHIPPED))


def steady_variant_text(name: str, shipped: str | None) -> str:
    """Variant file `name`: the shipped text (None: espeak's default voice) minus its unsteady keywords."""
    lines = ["language variant", f"name {name}"]
    for line in (shipped or "").splitlines():
        words = line.split()
        if words and words[0] not in _REPLACED_KEYWORDS:
            lines.append(line.strip())
    return "\n".join([*lines, "flutter 0", "roughness 0", ""])


def write_steady_variants(shipped_dir: Path, target_dir: Path) -> None:
    """Write every candidate into `target_dir` (espeak's `voices/!v`) from the shipped variants."""
    for name in candidate_names():
        shipped = None if name == STEADY else (shipped_dir / name.removeprefix(_PREFIX)).read_text("latin-1")
        (target_dir / name).write_text(steady_variant_text(name, shipped), encoding="latin-1")


class VariantCatalogue:
    """The candidates' embeddings, computed on first use (one rendering each), then kept.

    `render(variant)` speaks REFERENCE_SENTENCE with that variant. Safe to share between threads.
    """

    def __init__(self, render: Callable[[str], Pcm], encoder: Callable[[], SpeakerEncoder]) -> None:
        self._render = render
        self._encoder = encoder
        self._lock = threading.Lock()
        self._embeddings: dict[str, np.ndarray] | None = None

    def embeddings(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._embeddings is None:
                encoder = self._encoder()
                self._embeddings = {name: encoder.embed(self._render(name)) for name in candidate_names()}
            return self._embeddings

    def closest(self, embedding: np.ndarray) -> str:
        """The variant most similar to `embedding`; ties go to the earlier candidate."""
        scores = {name: cosine(embedding, vector) for name, vector in self.embeddings().items()}
        return max(candidate_names(), key=lambda name: scores[name])
