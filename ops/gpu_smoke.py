"""Check CosyVoice3 on a machine with a GPU and the weights: load the model from COSYVOICE_MODEL_DIR
(or --model-dir), stream every mode (zero-shot twice, the second with the registered voice;
cross-lingual; instruct with each --preset) and print, per mode, the time to the first chunk of audio,
the total time, the audio's length and the real-time factor (total / audio); write the WAVs.

Then --concurrency N streams of zero-shot at once, --rounds R times, with first-chunk and total
p50/p99 and the throughput (audio seconds per wall second). The engine serves one stream at a time,
so at N > 1 the first-chunk times include the wait behind the other streams.

Without --prompt, a few seconds of espeak-ng Mandarin stand in for a recording. Needs the CosyVoice
code on PYTHONPATH, as in ops/docker/gpu.Dockerfile. COSYVOICE_TEXT_FRONTEND, COSYVOICE_WETEXT_DIR,
COSYVOICE_STALL_S and COSYVOICE_VLLM apply as in the worker. Exits 1 if loading or any synthesis fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

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


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # also the WAV's file name
    request: SynthesisRequest


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One stream, timed from the call of `synthesize_stream` to its first piece and to its end."""

    name: str
    audio_s: float
    synthesis_s: float  # the whole stream (or until it failed)
    first_chunk_s: float | None  # None when no audio came
    path: Path | None = None  # the WAV; None when it failed or none was written
    error: str | None = None

    @property
    def real_time_factor(self) -> float:
        return self.synthesis_s / self.audio_s if self.audio_s > 0 else float("inf")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """`concurrency` streams at once, `rounds` times over."""

    concurrency: int
    rounds: int
    outcomes: list[Outcome]
    wall_s: float  # the rounds' wall-clock time, added up

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is None]

    @property
    def throughput(self) -> float:
        """Seconds of audio made per second of wall-clock time."""
        return sum(o.audio_s for o in self.succeeded) / self.wall_s if self.wall_s > 0 else 0.0


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=1,
        metavar="N",
        help="zero-shot streams at once, after the modes (default: 1)",
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=3, metavar="R", help="how often to run them (default: 3)"
    )


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


def stream_once(engine: Engine, name: str, request: SynthesisRequest) -> tuple[Outcome, Pcm | None]:
    """Stream `request` to its end, timing it; the pieces joined, or None if it failed."""
    started = time.perf_counter()
    first_chunk_s: float | None = None
    pieces: list[Pcm] = []
    try:
        for piece in engine.synthesize_stream(request):
            if first_chunk_s is None:
                first_chunk_s = time.perf_counter() - started
            pieces.append(piece)
    except EngineError as exc:
        return Outcome(name, 0.0, time.perf_counter() - started, first_chunk_s, error=str(exc)), None
    synthesis_s = time.perf_counter() - started
    if not pieces:
        return Outcome(name, 0.0, synthesis_s, None, error="the stream yielded no audio"), None
    pcm = Pcm(np.concatenate([p.samples for p in pieces]), pieces[0].sample_rate_hz)
    return Outcome(name, pcm.duration_s, synthesis_s, first_chunk_s), pcm


def run_cases(engine: Engine, cases: Sequence[Case], out_dir: Path) -> list[Outcome]:
    """Stream each case in turn, writing `<name>.wav`; a failure is recorded and the rest go on."""
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for case in cases:
        outcome, pcm = stream_once(engine, case.name, case.request)
        if pcm is not None:
            path = out_dir / f"{case.name}.wav"
            path.write_bytes(encode_audio(pcm, "wav"))
            outcome = dataclasses.replace(outcome, path=path)
        outcomes.append(outcome)
    return outcomes


def run_concurrent(engine: Engine, request: SynthesisRequest, concurrency: int, rounds: int) -> LoadReport:
    """`concurrency` threads each streaming `request` at once, `rounds` times; nothing is written."""
    outcomes: list[Outcome] = []
    wall_s = 0.0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gpu-smoke") as pool:
        for round_number in range(rounds):
            started = time.perf_counter()
            futures = [
                pool.submit(stream_once, engine, f"round{round_number}.stream{i}", request)
                for i in range(concurrency)
            ]
            outcomes += [future.result()[0] for future in futures]  # the audio itself is dropped
            wall_s += time.perf_counter() - started
    return LoadReport(concurrency, rounds, outcomes, wall_s)


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 (numpy's linear interpolation: with few values p99 is close to the maximum)."""
    p50, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99])
    return float(p50), float(p99)


def _print_cases(outcomes: Sequence[Outcome]) -> None:
    print(f"  {'mode':<24} {'first chunk':>11} {'total':>9} {'audio':>9} {'RTF':>7}  wav")
    for o in outcomes:
        if o.error is None:
            print(
                f"✓ {o.name:<24} {o.first_chunk_s:9.3f} s {o.synthesis_s:7.2f} s {o.audio_s:7.2f} s "
                f"{o.real_time_factor:7.3f}  {o.path}"
            )
        else:
            print(f"✗ {o.name:<24} failed after {o.synthesis_s:.2f} s: {o.error}")


def _print_load(report: LoadReport) -> None:
    print(
        f"concurrency {report.concurrency} x {report.rounds} rounds: "
        f"{len(report.outcomes)} zero-shot streams of the registered voice, "
        f"{len(report.outcomes) - len(report.succeeded)} failed"
    )
    print(
        "  the engine serves one stream at a time: with concurrency above 1 the first-chunk times "
        "include the wait for the streams ahead"
    )
    for o in report.outcomes:
        if o.error is not None:
            print(f"✗ {o.name} failed after {o.synthesis_s:.2f} s: {o.error}")
    succeeded = report.succeeded
    if not succeeded:
        return
    for label, values in (
        ("first chunk", [o.first_chunk_s for o in succeeded if o.first_chunk_s is not None]),
        ("total", [o.synthesis_s for o in succeeded]),
    ):
        p50, p99 = percentiles(values)
        print(f"  {label:<12} p50 {p50:7.3f} s  p99 {p99:7.3f} s")
    audio_s = sum(o.audio_s for o in succeeded)
    print(
        f"  throughput   {report.throughput:.2f} s of audio per wall-clock second "
        f"({audio_s:.1f} s of audio in {report.wall_s:.1f} s)"
    )


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
            stall_s=settings.cosyvoice_stall_s,
            vllm=settings.cosyvoice_vllm,
        )
    except EngineError as exc:
        print(exc)
        return 1
    loaded_s, frontend = time.perf_counter() - started, engine.text_frontend or "none (normalisation off)"
    print(
        f"{engine.version} loaded in {loaded_s:.1f} s on {_gpu_name()}, text frontend {frontend}, "
        f"vLLM {'on' if settings.cosyvoice_vllm else 'off'}"
    )
    print(f"prompt: {prompt.duration_s:.1f} s, transcript {transcript!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompt.wav").write_bytes(encode_audio(prompt, "wav"))  # to compare the voices by ear
    cases = smoke_cases(
        prompt, transcript, args.text, args.cross_lingual_text, args.preset or DEFAULT_PRESETS
    )
    outcomes = run_cases(engine, cases, args.out)
    _print_cases(outcomes)
    report = run_concurrent(engine, cases[0].request, args.concurrency, args.rounds)
    _print_load(report)
    return 0 if all(o.error is None for o in [*outcomes, *report.outcomes]) else 1
