"""Check CosyVoice3 on a machine with a GPU and the weights: load the model from COSYVOICE_MODEL_DIR
(or --model-dir), synthesise every mode (zero-shot twice, the second with the registered voice;
cross-lingual; instruct with each --preset), print each one's real-time factor, write the WAVs.

Without --prompt, a few seconds of espeak-ng Mandarin stand in for a recording. Needs the CosyVoice
code on PYTHONPATH, as in ops/docker/gpu.Dockerfile. Exits 1 if loading or any synthesis fails.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.audio import AudioError, Pcm, decode_audio, encode_audio, resample
from common.config import Settings
from common.presets import PRESETS_BY_ID
from common.vocabulary import CROSS_LINGUAL, INSTRUCT, ZERO_SHOT
from synth_worker.engines.base import Engine, SynthesisRequest
from synth_worker.engines.cosyvoice3 import PROMPT_RATE_HZ, CosyVoice3Engine
from synth_worker.engines.errors import EngineError

DEFAULT_TEXT = "收到好友从远方寄来的生日礼物，那份意外的惊喜让我心中充满了快乐。笑容如花儿般绽放。"
DEFAULT_CROSS_LINGUAL_TEXT = "This is my own voice, speaking English for the first time."
DEFAULT_PRESETS = ("sichuan", "happy")


@dataclass(frozen=True)
class Case:
    name: str  # also the WAV's file name
    request: SynthesisRequest


@dataclass(frozen=True)
class Outcome:
    name: str
    audio_s: float
    synthesis_s: float
    path: Path | None  # None when it failed
    error: str | None = None

    @property
    def real_time_factor(self) -> float:
        return self.synthesis_s / self.audio_s if self.audio_s > 0 else float("inf")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", help="the model directory (default: COSYVOICE_MODEL_DIR)")
    parser.add_argument("--prompt", type=Path, help="a voice recording, 3-30 s (default: espeak-ng speech)")
    parser.add_argument("--prompt-text", help="the recording's transcript (required with --prompt)")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what zero-shot and instruct say")
    parser.add_argument(
        "--cross-lingual-text", default=DEFAULT_CROSS_LINGUAL_TEXT, help="what cross-lingual says"
    )
    parser.add_argument(
        "--preset",
        action="append",
        choices=sorted(PRESETS_BY_ID),
        metavar="ID",
        help=f"an instruct preset; repeatable (default: {', '.join(DEFAULT_PRESETS)})",
    )
    parser.add_argument("--out", type=Path, default=Path("var/gpu-smoke"), help="where to write the WAVs")


def smoke_cases(
    prompt: Pcm, transcript: str, text: str, cross_lingual_text: str, presets: Sequence[str]
) -> list[Case]:
    """Every mode once, zero-shot twice (registering the voice, then reusing it)."""
    speaker_key = f"gpu-smoke.{hashlib.sha256(prompt.samples.tobytes()).hexdigest()[:16]}"

    def request(text: str, mode: str, instruct: str | None = None) -> SynthesisRequest:
        return SynthesisRequest(
            text=text,
            mode=mode,
            prompt=prompt,
            prompt_text=transcript,
            speaker_key=speaker_key,
            instruct=instruct,
        )

    return [
        Case("zero_shot", request(text, ZERO_SHOT)),
        Case("zero_shot_registered", request(text, ZERO_SHOT)),
        Case("cross_lingual", request(cross_lingual_text, CROSS_LINGUAL)),
        *(Case(f"instruct_{preset}", request(text, INSTRUCT, preset)) for preset in presets),
    ]


def run_cases(engine: Engine, cases: Sequence[Case], out_dir: Path) -> list[Outcome]:
    """Synthesise each case in turn, writing `<name>.wav`; a failure is recorded and the rest go on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for case in cases:
        started = time.perf_counter()
        try:
            pcm = engine.synthesize(case.request)
        except EngineError as exc:
            outcomes.append(Outcome(case.name, 0.0, time.perf_counter() - started, None, str(exc)))
            continue
        synthesis_s = time.perf_counter() - started
        path = out_dir / f"{case.name}.wav"
        path.write_bytes(encode_audio(pcm, "wav"))
        outcomes.append(Outcome(case.name, pcm.duration_s, synthesis_s, path))
    return outcomes


def _prompt(args: argparse.Namespace) -> tuple[Pcm, str]:
    if args.prompt is None:
        from ops.samples import SAMPLE_TEXT, speech  # espeak-ng: only when no recording is given

        generated = speech(SAMPLE_TEXT)
        return Pcm(resample(generated, PROMPT_RATE_HZ), PROMPT_RATE_HZ), SAMPLE_TEXT
    return decode_audio(args.prompt.read_bytes(), target_rate_hz=PROMPT_RATE_HZ), args.prompt_text


def _gpu_name() -> str:
    import torch  # loaded with the model already

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CPU)"


def run(args: argparse.Namespace) -> int:
    if args.prompt is not None and not args.prompt_text:
        print("--prompt-text is required with --prompt: zero-shot needs the recording's transcript")
        return 1
    try:
        prompt, transcript = _prompt(args)
    except (OSError, AudioError) as exc:
        print(f"cannot read the prompt: {exc}")
        return 1
    except (ImportError, EngineError) as exc:
        print(f"espeak-ng cannot make a stand-in prompt ({exc}): pass --prompt and --prompt-text")
        return 1
    started = time.perf_counter()
    try:
        settings = Settings.from_env()
        engine = CosyVoice3Engine.load(
            args.model_dir or settings.cosyvoice_model_dir,
            text_frontend=settings.cosyvoice_text_frontend,
            wetext_dir=settings.cosyvoice_wetext_dir,
        )
    except EngineError as exc:
        print(exc)
        return 1
    loaded_s, frontend = time.perf_counter() - started, engine.text_frontend or "none (normalisation off)"
    print(f"{engine.version} loaded in {loaded_s:.1f} s on {_gpu_name()}, text frontend {frontend}")
    print(f"prompt: {prompt.duration_s:.1f} s, transcript {transcript!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompt.wav").write_bytes(encode_audio(prompt, "wav"))  # to compare the voices by ear
    cases = smoke_cases(
        prompt, transcript, args.text, args.cross_lingual_text, args.preset or DEFAULT_PRESETS
    )
    outcomes = run_cases(engine, cases, args.out)
    for o in outcomes:
        if o.error is None:
            print(
                f"✓ {o.name:<24} {o.audio_s:6.2f} s audio in {o.synthesis_s:6.2f} s, "
                f"RTF {o.real_time_factor:.3f}  {o.path}"
            )
        else:
            print(f"✗ {o.name:<24} failed after {o.synthesis_s:.2f} s: {o.error}")
    return 0 if all(o.error is None for o in outcomes) else 1
