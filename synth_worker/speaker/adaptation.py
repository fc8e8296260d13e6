"""Moving synthetic speech toward a speaker with the WORLD vocoder (pyworld).

Two things set a voice apart that WORLD can change cheaply: pitch (the log-F0 mean and spread,
mapped linearly in the log domain) and the spectral envelope (formants, tilt, colour), which is
rebuilt frame by frame from the speaker's own nearest frames (synth_worker.speaker.frame_pool). A
`SpeakerProfile` holds what was measured once per voice; `adapt` applies it to every rendering of
that voice. Blocking throughout: call from an executor.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyworld

from common.audio import Pcm
from synth_worker.engines.errors import ProfileRejected
from synth_worker.speaker.frame_pool import FrameConversion

_FRAME_PERIOD_MS = 5.0
_F0_FLOOR_HZ, _F0_CEIL_HZ = 50.0, 800.0  # espeak's lowest male variants sit near 70 Hz
_MIN_VOICED_FRAMES = 20  # 0.1 s of voicing: fewer says nothing reliable about a pitch range
_OCTAVE_ERROR_LOG = 0.55  # farther than 0.8 octave from the median: a tracking error, not the voice
_SPREAD_RATIO_LIMITS = (0.2, 5.0)  # how far the log-F0 spread may be scaled
_DECIMALS = 4  # profile floats: well below audible differences, and stable bytes

# WORLD's noise source (synthesis, CheapTrick) is one static generator per process that each call
# reseeds, so two threads inside WORLD at once could interleave its draws and lose determinism.
_WORLD_LOCK = threading.Lock()


class ProfileError(ProfileRejected):
    """A speaker profile this code cannot read: corrupt, or made by another analysis version.

    The worker keys profiles by `profile_version`, so this means a damaged cache entry: it analyses
    the voice again once, and only a fresh profile that is refused too fails the task (never silently
    speaking with an unadapted voice).
    """


@dataclass(frozen=True)
class LogF0Stats:
    """Mean and standard deviation of log F0 (natural log of Hz) over voiced frames."""

    mean: float
    std: float

    @classmethod
    def of(cls, f0_hz: np.ndarray) -> LogF0Stats | None:
        """None when there is too little voicing to tell. Octave errors of the tracker are left out:
        a few frames an octave off would double the spread."""
        log_f0 = np.log(f0_hz[f0_hz > 0])
        log_f0 = log_f0[np.abs(log_f0 - np.median(log_f0)) < _OCTAVE_ERROR_LOG] if log_f0.size else log_f0
        if log_f0.size < _MIN_VOICED_FRAMES:
            return None
        return cls(round(float(log_f0.mean()), _DECIMALS), round(float(log_f0.std()), _DECIMALS))


@dataclass(frozen=True, eq=False)
class SpeakerProfile:
    """What the CPU engine measured of one voice: speak with `variant`, map F0, rebuild the envelope.

    Bytes: one line of compact JSON (the version, the variant, the pitch statistics and the frame
    pool's header), a newline, then the frame pool's binary body; the same profile always gives
    the same bytes.
    """

    variant: str  # the espeak voice variant closest to the prompt
    source_f0: LogF0Stats | None  # the variant's own pitch, at neutral prosody
    target_f0: LogF0Stats | None  # the prompt's pitch; None: keep the variant's
    frames: FrameConversion | None = None  # None: keep the variant's envelope (a sample without speech)

    def to_bytes(self, version: str) -> bytes:
        header: dict[str, object] = {
            "version": version,
            "variant": self.variant,
            "source_f0": _stats_fields(self.source_f0),
            "target_f0": _stats_fields(self.target_f0),
            "frames": None,
        }
        body = b""
        if self.frames is not None:
            header["frames"], body = self.frames.to_parts()
        return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body

    @classmethod
    def from_bytes(cls, data: bytes, version: str, *, variants: Sequence[str]) -> SpeakerProfile:
        """Raises ProfileError unless `data` is a profile of `version` naming one of `variants`."""
        head, _, body = data.partition(b"\n")
        try:
            fields = json.loads(head)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"speaker profile is not JSON: {exc}") from exc
        if not isinstance(fields, dict) or fields.get("version") != version:
            found = fields.get("version") if isinstance(fields, dict) else None
            raise ProfileError(f"speaker profile version {found!r}, expected {version!r}")
        try:
            frames = fields["frames"]
            if frames is None and body:
                raise ValueError("a frame pool body without its header")
            profile = cls(
                variant=fields["variant"],
                source_f0=_stats_from(fields["source_f0"]),
                target_f0=_stats_from(fields["target_f0"]),
                frames=None if frames is None else FrameConversion.from_parts(frames, body),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"speaker profile is malformed: {exc!r}") from exc
        if profile.variant not in variants:
            raise ProfileError(f"speaker profile names unknown variant {profile.variant!r}")
        return profile


def _stats_fields(stats: LogF0Stats | None) -> list[float] | None:
    return None if stats is None else [stats.mean, stats.std]


def _stats_from(value: object) -> LogF0Stats | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"F0 statistics must be [mean, std], not {value!r}")
    mean, std = (float(v) for v in value)
    if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
        raise ValueError(f"F0 statistics out of range: {value!r}")
    return LogF0Stats(mean, std)


@dataclass(frozen=True)
class WorldFeatures:
    """WORLD's picture of a recording: F0 per frame, spectral envelope and aperiodicity."""

    f0_hz: np.ndarray
    envelope: np.ndarray  # power spectrum per frame, (frames, fft_size // 2 + 1)
    aperiodicity: np.ndarray  # same shape, 0..1
    sample_rate_hz: int

    @classmethod
    def analyse(cls, pcm: Pcm) -> WorldFeatures:
        """F0 (see _track_f0), spectral envelope (CheapTrick) and aperiodicity (D4C)."""
        samples = pcm.samples.astype(np.float64)
        rate = pcm.sample_rate_hz
        f0, times = _track_f0(samples, rate)
        with _WORLD_LOCK:
            envelope = pyworld.cheaptrick(samples, f0, times, rate)
            aperiodicity = pyworld.d4c(samples, f0, times, rate)
        return cls(f0, envelope, aperiodicity, rate)

    def synthesize(self, f0_hz: np.ndarray, envelope: np.ndarray) -> Pcm:
        """Speech from these features with F0 and envelope replaced; peaks above full scale are limited."""
        with _WORLD_LOCK:
            samples = pyworld.synthesize(
                np.ascontiguousarray(f0_hz),
                np.ascontiguousarray(envelope),  # a warped envelope is a column gather: not C-ordered
                self.aperiodicity,
                self.sample_rate_hz,
                _FRAME_PERIOD_MS,
            )
        peak = float(np.max(np.abs(samples))) if samples.size else 0.0
        if peak > 0.99:  # a raised F0 or warped envelope can overshoot; scale rather than clip
            samples = samples * (0.99 / peak)
        return Pcm(samples.astype(np.float32), self.sample_rate_hz)


def _track_f0(samples: np.ndarray, rate_hz: int) -> tuple[np.ndarray, np.ndarray]:
    """F0 per frame and frame times: DIO refined by StoneMask.

    Harvest was tried and dropped: 6x slower, and on pitch-shifted test voices its log-F0 spread
    came out 2-3x the true one where DIO's was within 10 % (README, "The CPU engine").
    """
    with _WORLD_LOCK:
        coarse, times = pyworld.dio(
            samples, rate_hz, f0_floor=_F0_FLOOR_HZ, f0_ceil=_F0_CEIL_HZ, frame_period=_FRAME_PERIOD_MS
        )
        return pyworld.stonemask(samples, coarse, times, rate_hz), times


def map_f0(f0_hz: np.ndarray, source: LogF0Stats | None, target: LogF0Stats | None) -> np.ndarray:
    """Voiced frames moved from the source's log-F0 mean and spread to the target's."""
    if source is None or target is None:
        return f0_hz
    low, high = _SPREAD_RATIO_LIMITS
    ratio = min(high, max(low, target.std / source.std)) if source.std > 0 else 1.0
    voiced = f0_hz > 0
    mapped = f0_hz.copy()
    mapped[voiced] = np.exp((np.log(f0_hz[voiced]) - source.mean) * ratio + target.mean)
    mapped[voiced] = np.clip(mapped[voiced], _F0_FLOOR_HZ, _F0_CEIL_HZ)
    return mapped


def adapt(features: WorldFeatures, profile: SpeakerProfile, *, gain: float = 1.0) -> Pcm:
    """The speech of `features` with `profile`'s pitch and the speaker's envelope.

    A rebuilt envelope has the speaker's level, not the source's, so a volume change is applied
    here: `gain` scales the amplitude of speech rebuilt from a frame pool (and nothing else).
    """
    f0 = map_f0(features.f0_hz, profile.source_f0, profile.target_f0)
    if profile.frames is None:
        return features.synthesize(f0, features.envelope)
    envelope = profile.frames.convert(features.envelope, features.f0_hz, features.sample_rate_hz)
    return features.synthesize(f0, envelope * gain**2)  # a power spectrum: amplitude squared
