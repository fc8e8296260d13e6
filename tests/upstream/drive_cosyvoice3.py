"""Drive VoiceRelay's CosyVoice3 engine through the real upstream code; run in the upstream environment.

    .venv-cosyvoice/bin/python tests/upstream/drive_cosyvoice3.py <model dir> <wetext FST dir>

with upstream's source and this repository on PYTHONPATH (tests/test_cosyvoice3_upstream.py does
it). The model directory is a weight-free one (`make_tiny.py`): the audio is noise, the code path is
upstream's own. Prints one JSON object: how each text frontend setting loads, and per mode what came
back and the rates of the prompt WAVs upstream read.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from common.audio import Pcm
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.cosyvoice3 import CosyVoice3Engine
from synth_worker.engines.errors import EngineUnavailable

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
        "cross_lingual": {"mode": "cross_lingual", "prompt_text": ""},
    }
    for name, fields in cases.items():
        request = SynthesisRequest(
            text="收到好友从远方寄来的生日礼物。", prompt=prompt, speaker_key="owner.sha", **fields
        )
        read_rates.clear()
        started = time.perf_counter()
        try:
            pcm = engine.synthesize(request)
        except Exception as exc:  # reported, so the test can say which mode failed and why
            report["modes"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        report["modes"][name] = {
            "samples": int(pcm.samples.size),
            "sample_rate_hz": pcm.sample_rate_hz,
            "finite": bool(np.isfinite(pcm.samples).all()),
            "seconds": round(time.perf_counter() - started, 2),
            "prompt_rates_read_hz": sorted(set(read_rates)),
        }
    report["registered_speakers"] = engine.registered_speakers
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
