"""Speech detection with silero-vad's shipped ONNX model, run through onnxruntime (no torch).

The model is the one `silero_vad.load_silero_vad(onnx=True)` loads; it is found on disk without
importing the `silero_vad` package, whose `__init__` imports torch (the gateway must not need it).
The streaming protocol and the span logic are copied from silero-vad 6.2.3, `silero_vad/utils_vad.py`:
`OnnxWrapper.__call__` (512-sample windows at 16 kHz, each preceded by the previous window's last 64
samples, an LSTM state of shape (2, 1, 128) carried along) and `get_speech_timestamps_from_probs`
(without its `max_speech_duration_s` splitting, which we never use).

Synchronous and CPU-bound: callers run it in an executor. The session is shared by all threads
(onnxruntime's `InferenceSession.run` is thread-safe); each call carries its own LSTM state.
"""

from __future__ import annotations

import importlib.util
import itertools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

__all__ = [
    "SAMPLE_RATE_HZ",
    "WINDOW_SAMPLES",
    "SpeechSpan",
    "VadError",
    "VadParams",
    "keep_speech",
    "model_path",
    "preload",
    "spans_from_probabilities",
    "speech_probabilities",
    "speech_spans",
]

SAMPLE_RATE_HZ = 16_000
WINDOW_SAMPLES = 512  # 32 ms: the only window the 16 kHz model accepts
_CONTEXT_SAMPLES = 64  # the v5+ model sees the previous window's tail in front of each window
_STATE_SHAPE = (2, 1, 128)
_MODEL_FILE = "silero_vad.onnx"  # opset 16, 8 and 16 kHz: what load_silero_vad(onnx=True) picks

SpeechSpan = tuple[int, int]  # [start, end) in samples at 16 kHz


class VadError(Exception):
    """The VAD model is missing or cannot be loaded."""


@dataclass(frozen=True, slots=True)
class VadParams:
    """What counts as speech; the defaults are silero-vad's own, except the padding."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # None: threshold - 0.15, as upstream
    min_speech_ms: int = 250
    min_silence_ms: int = 100
    speech_pad_ms: int = 30


_session: onnxruntime.InferenceSession | None = None
_session_lock = threading.Lock()


def model_path() -> Path:
    """The ONNX file shipped in the installed silero-vad package; VadError if there is none."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise VadError("the silero-vad package is not installed")
    for location in spec.submodule_search_locations:
        path = Path(location) / "data" / _MODEL_FILE
        if path.is_file():
            return path
    raise VadError(f"silero-vad has no data/{_MODEL_FILE}")


def _get_session() -> onnxruntime.InferenceSession:
    """One session per process, made on first use; one thread per run (gateways have few cores)."""
    global _session
    if _session is None:
        with _session_lock:
            if _session is None:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                _session = onnxruntime.InferenceSession(
                    str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
                )
    return _session


def preload() -> None:
    """Load the model now (about 0.1 s), so that the first upload does not wait for it."""
    _get_session()


def speech_probabilities(samples_16k: np.ndarray) -> np.ndarray:
    """The model's speech probability for each 512-sample window (the last one zero-padded)."""
    samples = np.ascontiguousarray(samples_16k, dtype=np.float32).reshape(-1)
    windows = -(-samples.size // WINDOW_SAMPLES)
    padded = np.zeros(windows * WINDOW_SAMPLES, dtype=np.float32)
    padded[: samples.size] = samples
    session = _get_session()
    state = np.zeros(_STATE_SHAPE, dtype=np.float32)
    sample_rate = np.array(SAMPLE_RATE_HZ, dtype=np.int64)
    # The input row is [context | window]; sliding it over the padded signal gives both at once.
    framed = np.concatenate([np.zeros(_CONTEXT_SAMPLES, dtype=np.float32), padded])
    probabilities = np.empty(windows, dtype=np.float32)
    for i in range(windows):
        start = i * WINDOW_SAMPLES
        row = framed[np.newaxis, start : start + _CONTEXT_SAMPLES + WINDOW_SAMPLES]
        output, state = session.run(None, {"input": row, "state": state, "sr": sample_rate})
        probabilities[i] = output[0, 0]
    return probabilities


def spans_from_probabilities(
    probabilities: np.ndarray, n_samples: int, params: VadParams = VadParams()
) -> list[SpeechSpan]:
    """Speech spans from per-window probabilities: upstream's hysteresis state machine and padding."""
    min_speech = SAMPLE_RATE_HZ * params.min_speech_ms / 1000
    min_silence = SAMPLE_RATE_HZ * params.min_silence_ms / 1000
    pad = SAMPLE_RATE_HZ * params.speech_pad_ms / 1000
    neg_threshold = params.neg_threshold
    if neg_threshold is None:
        neg_threshold = max(params.threshold - 0.15, 0.01)

    spans: list[list[int]] = []
    start: int | None = None  # start of the current speech, while "triggered"
    temp_end = 0  # where a silence inside speech began; it ends the speech if it lasts
    for i, probability in enumerate(probabilities):
        sample = WINDOW_SAMPLES * i
        if probability >= params.threshold:
            temp_end = 0
            if start is None:
                start = sample
            continue
        if start is not None and probability < neg_threshold:
            temp_end = temp_end or sample
            if sample - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                spans.append([start, temp_end])
            start, temp_end = None, 0
    if start is not None and n_samples - start > min_speech:
        spans.append([start, n_samples])

    # Padding: each side by `pad`, but two spans closer than 2 * pad share the gap between them.
    for i, span in enumerate(spans):
        if i == 0:
            span[0] = int(max(0, span[0] - pad))
        if i < len(spans) - 1:
            gap = spans[i + 1][0] - span[1]
            if gap < 2 * pad:
                span[1] += int(gap // 2)
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - gap // 2))
            else:
                span[1] = int(min(n_samples, span[1] + pad))
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - pad))
        else:
            span[1] = int(min(n_samples, span[1] + pad))
    return [(s, e) for s, e in spans]


def speech_spans(samples_16k: np.ndarray, params: VadParams = VadParams()) -> list[SpeechSpan]:
    """Where the 16 kHz mono signal has speech, as [start, end) sample indices, padded."""
    return spans_from_probabilities(speech_probabilities(samples_16k), len(samples_16k), params)


def keep_speech(samples: np.ndarray, spans: list[SpeechSpan], *, max_pause_samples: int) -> np.ndarray:
    """The speech spans joined, with leading and trailing silence gone and each pause between
    spans kept only up to `max_pause_samples` (its two ends, so speech stays next to its own
    breath and room tone rather than to a cut)."""
    if not spans:
        return np.zeros(0, dtype=samples.dtype)
    pieces = [samples[spans[0][0] : spans[0][1]]]
    half = max_pause_samples // 2
    for (_, previous_end), (start, end) in itertools.pairwise(spans):
        if start - previous_end <= max_pause_samples:
            pieces.append(samples[previous_end:start])
        else:
            pieces += [samples[previous_end : previous_end + half], samples[start - half : start]]
        pieces.append(samples[start:end])
    return np.concatenate(pieces)
