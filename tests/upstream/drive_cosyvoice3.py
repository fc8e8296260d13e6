"""Drive VoiceRelay's CosyVoice3 engine through the real upstream code; run in the upstream environment.

    .venv-cosyvoice/bin/python tests/upstream/drive_cosyvoice3.py <model dir> <wetext FST dir>

with upstream's source and this repository on PYTHONPATH (tests/test_cosyvoice3_upstream.py does
it). The model directory is a weight-free one (`make_tiny.py`): the audio is noise, the code path is
upstream's own. Prints one JSON object: how each text frontend setting loads; per mode what came
back, whole and streamed, and the rates of the prompt WAVs upstream read; two streams one after the
other; and what an exception inside upstream's LLM thread becomes.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common.audio import Pcm
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.cosyvoice3 import CosyVoice3Engine
from synth_worker.engines.errors import EngineError, EngineUnavailable

PROMPT_RATE_HZ = 24_000


def prompt_voice(seconds: float = 3.0) -> Pcm:
    """A voiced stand-in for a person's sample: harmonics of a gliding pitch, under a syllable envelope."""
    t = np.arange(int(seconds * PROMPT_RATE_HZ)) / PROMPT_RATE_HZ
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / PROMPT_RATE_HZ
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    return Pcm((0.2 * voiced * envelope).astype(np.float32), PROMPT_RATE_HZ)


NORMALISED_TEXT = "今天是2025年3月5日，气温25°C。"


def frontends(model_dir: str) -> dict[str, object]:
    """What loading says without the FST files (wetext) and with normalisation off (none)."""
    report: dict[str, object] = {}
    try:
        CosyVoice3Engine.load(model_dir, text_frontend="wetext", wetext_dir=None)
    except EngineUnavailable as exc:
        report["wetext_without_files"] = f"EngineUnavailable: {exc}"
    else:
        report["wetext_without_files"] = "loaded"
    engine = CosyVoice3Engine.load(model_dir, text_frontend="none")
    report["none"] = {"text_frontend": engine.text_frontend, "normalised": normalised(engine)}
    return report


def normalised(engine: CosyVoice3Engine) -> str:
    return "".join(engine._model.frontend.text_normalize(NORMALISED_TEXT, split=False))


def main(model_dir: str, wetext_dir: str) -> None:
    report: dict[str, object] = {"frontends": frontends(model_dir)}
    started = time.perf_counter()
    engine = CosyVoice3Engine.load(model_dir, text_frontend="wetext", wetext_dir=wetext_dir)
    report["load_s"] = round(time.perf_counter() - started, 2)
    report["wetext"] = {"text_frontend": engine.text_frontend, "normalised": normalised(engine)}
    import torchaudio  # imported by upstream by now; its prompt WAVs are read through torchaudio.load

    read_rates: list[int] = []
    original_load = torchaudio.load

    def recording_load(*args, **kwargs):
        speech, rate = original_load(*args, **kwargs)
        read_rates.append(int(rate))
        return speech, rate

    torchaudio.load = recording_load
    report["modes"] = {}
    prompt = prompt_voice()
    cases = {
        "zero_shot": {"mode": "zero_shot", "prompt_text": "希望你以后能够做的比我还好呦。"},
        "instruct": {"mode": "instruct", "instruct": "sichuan", "prompt_text": ""},
        "cross_lingual": {"mode": "cross_lingual", "prompt_text": "希望你以后能够做的比我还好呦。"},
    }
    for name, fields in cases.items():
        request = SynthesisRequest(text=TEXT, prompt=prompt, speaker_key="owner.sha", **fields)
        read_rates.clear()
        outcome = report["modes"][name] = {}
        try:
            started = time.perf_counter()
            pcm = engine.synthesize(request)
            outcome.update(whole(pcm, time.perf_counter() - started))
            outcome["stream"] = streamed(engine, request)
        except Exception as exc:  # reported, so the test can say which mode failed and why
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            continue
        outcome["prompt_rates_read_hz"] = sorted(set(read_rates))
    report["registered_speakers"] = engine.registered_speakers
    zero_shot = SynthesisRequest(text=TEXT, prompt=prompt, speaker_key="owner.sha", **cases["zero_shot"])
    report["consecutive_streams"] = [streamed(engine, zero_shot) for _ in range(2)]
    report["llm_failure"] = llm_failure(engine, zero_shot)
    print(json.dumps(report))


TEXT = "收到好友从远方寄来的生日礼物。"


def whole(pcm: Pcm, seconds: float) -> dict[str, object]:
    return {
        "samples": int(pcm.samples.size),
        "sample_rate_hz": pcm.sample_rate_hz,
        "finite": bool(np.isfinite(pcm.samples).all()),
        "seconds": round(seconds, 2),
    }


def streamed(engine: CosyVoice3Engine, request: SynthesisRequest) -> dict[str, object]:
    """The pieces of one stream: their sizes, and when the first came."""
    started = time.perf_counter()
    sizes, first_s = [], None
    for piece in engine.synthesize_stream(request):
        first_s = first_s if first_s is not None else time.perf_counter() - started
        sizes.append(int(piece.samples.size))
    return {"chunk_samples": sizes, "first_chunk_s": round(first_s or 0.0, 3)}


def llm_failure(engine: CosyVoice3Engine, request: SynthesisRequest) -> dict[str, object]:
    """An exception raised inside upstream's LLM (in its own thread), streamed and not, then a normal
    request: what each one gave and how long it took."""
    llm = engine._model.model.llm
    calls = {"n": 0}

    def failing_sampling(*args: object, **kwargs: object) -> int:
        calls["n"] += 1
        if calls["n"] > 30:  # some tokens first, then the failure
            raise RuntimeError("injected: CUDA error: an illegal memory access was encountered")
        return type(llm).sampling_ids(llm, *args, **kwargs)

    report: dict[str, object] = {}
    llm.sampling_ids = failing_sampling  # an instance attribute, looked up at each token
    try:
        for name, speak in (("stream", lambda: list(engine.synthesize_stream(request))),
                            ("whole", lambda: engine.synthesize(request))):  # fmt: skip
            calls["n"] = 0
            started = time.perf_counter()
            try:
                speak()
            except EngineError as exc:
                outcome = f"EngineError: {exc}"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            else:
                outcome = "no error"
            report[name] = {"outcome": outcome, "seconds": round(time.perf_counter() - started, 2)}
    finally:
        del llm.sampling_ids
    report["afterwards"] = streamed(engine, request)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
