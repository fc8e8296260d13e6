"""Speaker conversion by nearest frames: the spectral envelope of synthetic speech rebuilt from the speaker's.

In the spirit of kNN-VC (Baas, van Niekerk and Kamper, 2023), on classic features instead of a
trained model's: every frame of espeak's speech is replaced by the average of its k nearest frames
from the speaker's own sample. Frames are WORLD spectral envelopes coded to a mel-cepstrum-like
vector (`pyworld.code_spectral_envelope`); they are compared on their shape (c1..c24) after each side
is normalised by its own speaker's mean and spread, so that "an open vowel of espeak" finds "an open
vowel of this person" rather than whatever frame happens to share espeak's tilt. The averaged frames
carry the person's formants, spectral tilt and high-frequency colour, which is what a speaker
encoder (and an ear) hears as the voice; timing, pitch contour and the sounds themselves stay
espeak's. Level follows the speaker's frames, except that frames quieter than espeak's average stay
that much quieter, so pauses and stop closures stay silent.

The pool is measured once per voice (`FrameConversion.fit`) and travels inside the speaker profile.
Blocking throughout: call from an executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyworld

CODED_DIMS = 60  # per frame; 60 keeps formant detail that 24 blurs (measured in docs/VOICES.md)
_MATCH = slice(1, 25)  # c1..c24: the envelope's shape; c0, its level, is left out of the matching
NEIGHBOURS = 4
# Every 5 ms frame of a short sample counts (4 s of speech: 0.03 more similarity than every other
# frame); a long one is thinned evenly to this many, 15 s of speech, which bounds profile size
# (360 KB) and matching time, and loses nothing measurable: neighbours 5 ms apart are near copies.
MAX_POOL_FRAMES = 3000
MIN_POOL_FRAMES = 40  # voiced: under 0.2 s of voicing says too little about a voice, so keep the envelope
_SPEECH_RANGE = 12.0  # in c0 units: frames this far below the sample's loudest are silence, not voice
_VOICING_MISMATCH = 1e3  # far beyond any shape distance: voiced frames take voiced neighbours
_MIN_SPREAD = 1e-3
_DECIMALS = 4


@dataclass(frozen=True, eq=False)
class FrameStats:
    """Mean and standard deviation of each coded dimension over one speaker's speech frames."""

    mean: np.ndarray  # (CODED_DIMS,) float64
    std: np.ndarray

    @classmethod
    def of(cls, coded: np.ndarray) -> FrameStats:
        mean = np.round(coded.mean(axis=0), _DECIMALS)
        std = np.round(np.maximum(coded.std(axis=0), _MIN_SPREAD), _DECIMALS)
        return cls(mean, std)

    def normalise(self, coded: np.ndarray) -> np.ndarray:
        return (coded[:, _MATCH] - self.mean[_MATCH]) / self.std[_MATCH]

    def to_fields(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_fields(cls, fields: object) -> FrameStats:
        """Raises ValueError unless `fields` is what to_fields wrote."""
        if not isinstance(fields, dict):
            raise ValueError(f"frame statistics must be an object, not {fields!r}")
        mean, std = (np.asarray(fields[key], dtype=np.float64) for key in ("mean", "std"))
        if mean.shape != (CODED_DIMS,) or std.shape != (CODED_DIMS,):
            raise ValueError(f"frame statistics need {CODED_DIMS} values each")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("frame statistics out of range")
        return cls(mean, std)


@dataclass(frozen=True, eq=False)
class FrameConversion:
    """What turns one source voice (an espeak variant) into one speaker: the source's statistics and
    the speaker's frame pool (coded envelopes, float16, and whether each frame is voiced)."""

    source: FrameStats
    pool: np.ndarray  # (n, CODED_DIMS) float16
    pool_voiced: np.ndarray  # (n,) bool

    @classmethod
    def fit(
        cls, source_envelope: np.ndarray, envelope: np.ndarray, f0_hz: np.ndarray, rate_hz: int
    ) -> FrameConversion | None:
        """From the source voice's reference speech (its WORLD envelope) and the speaker's sample (WORLD
        envelope and F0, at the same rate); None when the sample holds too little voice to convert toward."""
        source = _coded(source_envelope, rate_hz)
        source_speech = _speech_frames(source)
        coded = _coded(envelope, rate_hz)
        speech = np.flatnonzero(_speech_frames(coded))
        speech = speech[:: math.ceil(speech.size / MAX_POOL_FRAMES)] if speech.size else speech
        voiced = f0_hz[speech] > 0
        if voiced.sum() < MIN_POOL_FRAMES or source_speech.sum() < MIN_POOL_FRAMES:
            return None  # silence, noise or a whisper: nothing to take a voice from
        return cls(FrameStats.of(source[source_speech]), coded[speech].astype(np.float16), voiced)

    def convert(self, envelope: np.ndarray, f0_hz: np.ndarray, rate_hz: int) -> np.ndarray:
        """The envelope (WORLD power spectrum per frame) of speech in the source voice, rebuilt from the
        speaker's nearest frames; same shape as `envelope`."""
        coded = _coded(envelope, rate_hz)
        pool, keys = self._pool_and_keys
        queries = self.source.normalise(coded)
        distances = (
            np.sum(queries**2, axis=1)[:, None] + np.sum(keys**2, axis=1)[None, :] - 2.0 * queries @ keys.T
        )
        distances += _VOICING_MISMATCH * ((f0_hz > 0)[:, None] != self.pool_voiced[None, :])
        k = min(NEIGHBOURS, len(pool))
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        converted = pool[nearest].mean(axis=1)
        converted[:, 0] += np.minimum(coded[:, 0] - self.source.mean[0], 0.0)
        fft_size = pyworld.get_cheaptrick_fft_size(rate_hz)
        return pyworld.decode_spectral_envelope(np.ascontiguousarray(converted), rate_hz, fft_size)

    @cached_property
    def _pool_and_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The pool as float64, and its frames normalised by the speaker's own statistics (what queries
        are compared with): computed once per parsed profile, not once per streamed piece."""
        pool = self.pool.astype(np.float64)
        return pool, FrameStats.of(pool).normalise(pool)

    def to_parts(self) -> tuple[dict[str, object], bytes]:
        """The header fields and the binary body that `from_parts` reads back."""
        header = {"frames": len(self.pool), "dims": CODED_DIMS, "source": self.source.to_fields()}
        body = self.pool.astype("<f2").tobytes() + np.packbits(self.pool_voiced).tobytes()
        return header, body

    @classmethod
    def from_parts(cls, header: object, body: bytes) -> FrameConversion:
        """Raises ValueError unless `header` and `body` are what to_parts wrote."""
        if not isinstance(header, dict) or header.get("dims") != CODED_DIMS:
            raise ValueError(f"frame pool header {header!r} is not of {CODED_DIMS} dimensions")
        frames = header.get("frames")
        if not isinstance(frames, int) or not MIN_POOL_FRAMES <= frames <= MAX_POOL_FRAMES:
            raise ValueError(f"frame pool of {frames!r} frames")
        pool_bytes = frames * CODED_DIMS * 2
        if len(body) != pool_bytes + math.ceil(frames / 8):
            raise ValueError(f"frame pool body of {len(body)} bytes for {frames} frames")
        pool = np.frombuffer(body[:pool_bytes], dtype="<f2").reshape(frames, CODED_DIMS)
        if not np.isfinite(pool).all():
            raise ValueError("frame pool holds non-finite values")
        voiced = np.unpackbits(np.frombuffer(body[pool_bytes:], dtype=np.uint8), count=frames).astype(bool)
        return cls(FrameStats.from_fields(header.get("source")), pool.astype(np.float16), voiced)


def _coded(envelope: np.ndarray, rate_hz: int) -> np.ndarray:
    return pyworld.code_spectral_envelope(np.ascontiguousarray(envelope), rate_hz, CODED_DIMS)


def _speech_frames(coded: np.ndarray) -> np.ndarray:
    return coded[:, 0] > coded[:, 0].max() - _SPEECH_RANGE if len(coded) else np.zeros(0, dtype=bool)
