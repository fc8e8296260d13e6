"""The AIGC labels every output carries: China's 《人工智能生成合成内容标识办法》 and GB 45438-2025.

Two labels, both made here and applied by `synth_worker.jobs.render`:

- **Implicit** (Art. 5, GB 45438-2025 Annex E): a metadata field named `AIGC` whose value is the JSON
  `{"Label": "1", "ContentProducer": …, "ProduceID": <task id>, "ReservedCode1": "",
  "ContentPropagator": "", "PropagateID": "", "ReservedCode2": ""}`. MP3 carries it as an ID3 TXXX
  frame with description `AIGC`, M4A as a free-form (`----`) atom named `AIGC`. WAV cannot hold a
  field named AIGC: its RIFF INFO chunk has fixed four-letter keys only, so the same JSON goes into
  the comment (ICMT) as the line `AIGC=<json>` (common.audio folds extra keys into the comment).
- **Explicit** (Art. 4, GB 45438-2025 §6): an audible cue, `AIGC_EXPLICIT_LABEL`: `voice`, the
  sentence "本音频由人工智能合成" spoken by the CPU espeak engine (every worker has it, GPU ones
  included, since espeak-ng ships in a wheel) at 120–160 字/min; `rhythm`, the "短长短短" tone
  pattern (Morse "AI"); or `none`. It is matched in loudness to the speech, separated from it by a
  short silence and placed at the end (`PLACEMENT`), so that a downloaded file carries it.

Everything here is blocking and CPU-bound: the worker runs it on its engine executor.
"""

from __future__ import annotations

import json
import math
import threading

import numpy as np

from common.audio import Pcm, resample, rms_dbfs
from common.vocabulary import AIGC_NONE, AIGC_RHYTHM, AIGC_VOICE, ESPEAK
from synth_worker.engines.base import Engine, SynthesisRequest

# Where the explicit label goes: "end" (the contract's default) or "start". Art. 4 allows the start,
# the end or a suitable point in the middle; at the end the speech the user asked for comes first.
PLACEMENT = "end"
GAP_S = 0.3  # silence between the speech and the label

VOICE_TEXT = "本音频由人工智能合成"
# GB 45438-2025: a voice label is spoken at 120–160 字/min; we aim at the middle.
MIN_RATE_CPM, MAX_RATE_CPM, TARGET_RATE_CPM = 120.0, 160.0, 140.0
# espeak speaks VOICE_TEXT at about 140 字/min at 0.7 of its default rate (espeak-ng 1.52).
_VOICE_SPEED = 0.7
_MIN_SPEED, _MAX_SPEED = 0.5, 1.0

# The rhythm label: 短长短短 (Morse "AI": ·− ··) as a 1 kHz sine.
RHYTHM_PATTERN = ("short", "long", "short", "short")
RHYTHM_TONE_HZ = 1000.0
RHYTHM_SHORT_S, RHYTHM_LONG_S, RHYTHM_GAP_S = 0.12, 0.36, 0.12
_RHYTHM_FADE_S = 0.01  # raised-cosine ramps: no clicks at the tone edges
_RHYTHM_RATE_HZ = 48_000

# Loudness: the label's active RMS follows the speech's, kept audible and below clipping.
_FRAME_S = 0.02
_ACTIVE_RANGE_DB = 30.0  # frames within this of the loudest count as sound, the rest as pauses
_LABEL_MIN_DBFS, _LABEL_MAX_DBFS = -30.0, -12.0
_PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS
GAIN_STEP_DB = 0.25


def annex_e_label(producer: str, produce_id: str) -> str:
    """The implicit label's value (GB 45438-2025 Annex E): compact JSON, every value a string."""
    label = {
        "Label": "1",
        "ContentProducer": producer,
        "ProduceID": produce_id,
        "ReservedCode1": "",
        "ContentPropagator": "",
        "PropagateID": "",
        "ReservedCode2": "",
    }
    return json.dumps(label, ensure_ascii=False, separators=(",", ":"))


def implicit_metadata(producer: str, produce_id: str) -> dict[str, str]:
    """Container tags for `common.audio.encode_audio`: the `AIGC` field and a human-readable comment."""
    return {
        "comment": f"人工智能生成合成内容 (AI-generated); {producer}; {produce_id}",
        "AIGC": annex_e_label(producer, produce_id),
    }


def active_rms_dbfs(pcm: Pcm) -> float:
    """RMS over the frames that carry sound (pauses left out), in dBFS; silence gives -120."""
    frame = max(1, round(pcm.sample_rate_hz * _FRAME_S))
    usable = pcm.samples[: len(pcm.samples) // frame * frame]
    if usable.size == 0:
        return rms_dbfs(pcm)
    energies = np.mean(np.square(usable.reshape(-1, frame), dtype=np.float64), axis=1)
    loudest = float(energies.max())
    if loudest <= 0:
        return rms_dbfs(pcm)
    active = energies[energies >= loudest * 10 ** (-_ACTIVE_RANGE_DB / 10)]
    return 10 * math.log10(float(active.mean()))


def rhythm_label(rate_hz: int = _RHYTHM_RATE_HZ) -> Pcm:
    """短长短短 as 1 kHz tone bursts with raised-cosine fades, at full-ish scale (matched later)."""
    parts: list[np.ndarray] = []
    fade = round(_RHYTHM_FADE_S * rate_hz)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, math.pi, fade))).astype(np.float32)
    for index, kind in enumerate(RHYTHM_PATTERN):
        if index:
            parts.append(np.zeros(round(RHYTHM_GAP_S * rate_hz), np.float32))
        n = round((RHYTHM_SHORT_S if kind == "short" else RHYTHM_LONG_S) * rate_hz)
        tone = (0.5 * np.sin(2 * math.pi * RHYTHM_TONE_HZ * np.arange(n) / rate_hz)).astype(np.float32)
        tone[:fade] *= ramp
        tone[-fade:] *= ramp[::-1]
        parts.append(tone)
    return Pcm(np.concatenate(parts), rate_hz)


def speech_span_s(pcm: Pcm) -> float:
    """Seconds from the first to the last frame with sound: the length of what is said."""
    frame = max(1, round(pcm.sample_rate_hz * _FRAME_S))
    usable = pcm.samples[: len(pcm.samples) // frame * frame]
    if usable.size == 0:
        return 0.0
    energies = np.mean(np.square(usable.reshape(-1, frame), dtype=np.float64), axis=1)
    loud = np.nonzero(energies >= energies.max() * 10 ** (-_ACTIVE_RANGE_DB / 10))[0]
    return 0.0 if loud.size == 0 else (loud[-1] - loud[0] + 1) * _FRAME_S


def rate_cpm(pcm: Pcm, text: str = VOICE_TEXT) -> float:
    """Speaking rate of `pcm` saying `text`, in characters (字) per minute."""
    return len(text) / max(speech_span_s(pcm), 1e-6) * 60


_voice_lock = threading.Lock()
_voice_cache: dict[str, Pcm] = {}  # espeak version -> the rendered sentence, trimmed
_espeak: list[Engine] = []  # the process's espeak engine for the label, made on first use


def voice_label() -> Pcm:
    """VOICE_TEXT spoken by espeak at 120–160 字/min; rendered once per process and engine version."""
    from synth_worker.engines.registry import load_engine  # the one module that names engines

    with _voice_lock:
        if not _espeak:
            _espeak.append(load_engine(ESPEAK))  # the C library is shared with an espeak worker's own
        engine = _espeak[0]
        cached = _voice_cache.get(engine.version)
        if cached is not None:
            return cached
        speed = _VOICE_SPEED
        pcm = _speak(engine, speed)
        if not MIN_RATE_CPM <= rate_cpm(pcm) <= MAX_RATE_CPM:  # another espeak release: correct once
            speed = min(_MAX_SPEED, max(_MIN_SPEED, speed * TARGET_RATE_CPM / rate_cpm(pcm)))
            pcm = _speak(engine, speed)
        if not MIN_RATE_CPM <= rate_cpm(pcm) <= MAX_RATE_CPM:
            raise RuntimeError(f"espeak speaks the AIGC label at {rate_cpm(pcm):.0f} 字/min, not 120-160")
        _voice_cache[engine.version] = pcm
        return pcm


def _speak(engine: Engine, speed: float) -> Pcm:
    silent_prompt = Pcm(np.zeros(16_000, np.float32), 16_000)  # espeak speaks without a profile
    request = SynthesisRequest(
        text=VOICE_TEXT, mode="zero_shot", prompt=silent_prompt, prompt_text="", speaker_key="aigc-label",
        speed=speed, language="zh",
    )  # fmt: skip
    return _trim(engine.synthesize(request))


def _trim(pcm: Pcm) -> Pcm:
    """Leading and trailing near-silence removed (the gap before the label is ours to set)."""
    loud = np.nonzero(np.abs(pcm.samples) > 10 ** (-50 / 20))[0]
    if loud.size == 0:
        return pcm
    return Pcm(pcm.samples[loud[0] : loud[-1] + 1].copy(), pcm.sample_rate_hz)


def explicit_label(kind: str) -> Pcm | None:
    """The audible label of `kind` (AIGC_LABELS) at its own rate and level; None for `none`."""
    if kind == AIGC_VOICE:
        return voice_label()
    if kind == AIGC_RHYTHM:
        return rhythm_label()
    if kind == AIGC_NONE:
        return None
    raise ValueError(f"unknown AIGC label {kind!r}")


def match_loudness(label: Pcm, speech: Pcm) -> Pcm:
    """`label` at `speech`'s sample rate, with one gain that gives it the speech's active RMS
    (kept between -30 and -12 dBFS, so that it is heard after quiet speech and never clips)."""
    at_rate = Pcm(resample(label, speech.sample_rate_hz), speech.sample_rate_hz)
    return scaled(at_rate, label_gain_db(at_rate, speech))


def label_gain_db(label: Pcm, speech: Pcm) -> float:
    """The gain that matches `label` (at `speech`'s rate) to `speech` (`match_loudness`), rounded
    down to GAIN_STEP_DB: a step is inaudible, and the few gains in use let a worker encode each
    label's tail once (synth_worker/output_file.py)."""
    target = min(_LABEL_MAX_DBFS, max(_LABEL_MIN_DBFS, active_rms_dbfs(speech)))
    gain_db = target - active_rms_dbfs(label)
    peak = float(np.max(np.abs(label.samples))) if label.samples.size else 0.0
    if peak > 0:
        gain_db = min(gain_db, 20 * math.log10(_PEAK_CEILING / peak))
    return math.floor(gain_db / GAIN_STEP_DB) * GAIN_STEP_DB


def scaled(label: Pcm, gain_db: float) -> Pcm:
    gain = np.float32(10 ** (gain_db / 20))
    return Pcm((label.samples * gain).astype(np.float32, copy=False), label.sample_rate_hz)


def label_tail(speech: Pcm, kind: str) -> Pcm | None:
    """What follows `speech` when the label goes at the end: GAP_S of silence, then the audible label
    of `kind` matched to the speech's loudness. None for `none`. A stream sends it after the speech."""
    label = explicit_label_at(kind, speech.sample_rate_hz)
    if label is None:
        return None
    return paused(scaled(label, label_gain_db(label, speech)), round(GAP_S * speech.sample_rate_hz))


def paused(label: Pcm, pause_samples: int) -> Pcm:
    """`label` after `pause_samples` of silence."""
    return Pcm(np.concatenate([np.zeros(pause_samples, np.float32), label.samples]), label.sample_rate_hz)


_at_rate_lock = threading.Lock()
_at_rate: dict[tuple[str, int], Pcm] = {}  # (kind, rate) -> the label resampled, made on first use


def explicit_label_at(kind: str, rate_hz: int) -> Pcm | None:
    """`explicit_label(kind)` at `rate_hz`, resampled once per process and rate; None for `none`."""
    label = explicit_label(kind)
    if label is None or label.sample_rate_hz == rate_hz:
        return label
    with _at_rate_lock:
        cached = _at_rate.get((kind, rate_hz))
        if cached is None:
            cached = _at_rate[(kind, rate_hz)] = Pcm(resample(label, rate_hz), rate_hz)
        return cached


def with_explicit_label(speech: Pcm, kind: str, *, placement: str = PLACEMENT) -> Pcm:
    """`speech` with the audible label of `kind` appended (or prepended), GAP_S apart."""
    if placement == "end":
        tail = label_tail(speech, kind)
        return (
            speech
            if tail is None
            else Pcm(np.concatenate([speech.samples, tail.samples]), speech.sample_rate_hz)
        )
    if placement != "start":
        raise ValueError(f"placement must be start or end, got {placement!r}")
    label = explicit_label(kind)
    if label is None:
        return speech
    parts = [match_loudness(label, speech).samples, _gap(speech), speech.samples]
    return Pcm(np.concatenate(parts), speech.sample_rate_hz)


def _gap(speech: Pcm) -> np.ndarray:
    return np.zeros(round(GAP_S * speech.sample_rate_hz), np.float32)
