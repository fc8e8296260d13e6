"""`python -m ops gpu-smoke` without a GPU: every mode streamed and timed, the concurrent rounds and their
percentiles, the WAVs, the exit status, the settings it loads the engine with.

The model is tests/test_cosyvoice3.py's `FakeCosyVoice3` (three pieces per call when streaming), behind
the real CosyVoice3Engine, so the times are tiny but measured exactly as on a GPU.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import test_cosyvoice3
from test_cosyvoice3 import TEXT, TRANSCRIPT, FakeCosyVoice3, voice

from common.audio import decode_audio, encode_audio
from ops import cli, gpu_smoke
from ops.gpu_smoke import percentiles, run_cases, run_concurrent, smoke_cases
from synth_worker.engines.cosyvoice3 import CosyVoice3Engine

# The loading fixtures of tests/test_cosyvoice3.py: a complete (empty) model directory, and upstream's
# CosyVoice3 class replaced by one that builds a FakeCosyVoice3.
model_dir = test_cosyvoice3.model_dir
fake_upstream = test_cosyvoice3.fake_upstream

MODES = ["zero_shot", "zero_shot_registered", "cross_lingual", "instruct_sichuan", "instruct_happy"]


def test_gpu_smoke_is_an_ops_verb() -> None:
    assert "gpu-smoke" in {verb.name for verb in cli.VERBS}
    args = cli.build_parser().parse_args(["gpu-smoke", "--preset", "sichuan", "--out", "/tmp/x"])
    assert args.preset == ["sichuan"] and args.out == Path("/tmp/x")
    assert (args.concurrency, args.rounds) == (1, 3)


@pytest.mark.parametrize("option", ["--concurrency", "--rounds"])
@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_concurrency_and_rounds_must_be_positive_integers(option: str, value: str, capsys: Any) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["gpu-smoke", option, value])
    assert option in capsys.readouterr().err


def test_gpu_smoke_streams_every_mode_and_writes_wavs(tmp_path: Path) -> None:
    model = FakeCosyVoice3()
    cases = smoke_cases(voice(5), TRANSCRIPT, TEXT, "Hello there.", ["sichuan", "happy"])
    outcomes = run_cases(CosyVoice3Engine(model), cases, tmp_path)

    assert [o.name for o in outcomes] == MODES
    assert all(c.kwargs["stream"] is True for c in model.inference_calls())
    # zero-shot once (the second zero-shot and cross-lingual reuse it), instruct once per preset
    assert len(model.registrations()) == 3
    for outcome in outcomes:
        assert outcome.error is None
        assert outcome.first_chunk_s is not None and 0 <= outcome.first_chunk_s <= outcome.synthesis_s
        assert outcome.real_time_factor >= 0
        assert outcome.path == tmp_path / f"{outcome.name}.wav"
        written = decode_audio(outcome.path.read_bytes())
        assert written.sample_rate_hz == 24_000
        # The stream's pieces joined: three pieces of 100 samples per upstream call.
        assert written.samples.size == round(outcome.audio_s * 24_000) and written.samples.size % 300 == 0


def test_gpu_smoke_reports_a_failed_case_and_goes_on(tmp_path: Path) -> None:
    model = FakeCosyVoice3(fail_with=RuntimeError("boom"))
    outcomes = run_cases(
        CosyVoice3Engine(model), smoke_cases(voice(5), TRANSCRIPT, TEXT, "Hi.", []), tmp_path
    )
    assert [o.error is not None for o in outcomes] == [True, True, True]
    assert all("boom" in (o.error or "") and o.path is None for o in outcomes)
    assert all(o.first_chunk_s is None for o in outcomes)
    assert list(tmp_path.glob("*.wav")) == []


def test_concurrent_streams_are_all_timed_and_all_served() -> None:
    model = FakeCosyVoice3()
    [zero_shot, *_] = smoke_cases(voice(5), TRANSCRIPT, TEXT, "Hi.", [])
    report = run_concurrent(CosyVoice3Engine(model), zero_shot.request, concurrency=3, rounds=2)

    assert (report.concurrency, report.rounds, len(report.outcomes)) == (3, 2, 6)
    assert report.succeeded == report.outcomes
    assert all(o.first_chunk_s is not None and o.first_chunk_s <= o.synthesis_s for o in report.outcomes)
    assert all(o.path is None for o in report.outcomes)  # nothing is written for these
    assert len(model.registrations()) == 1  # six streams of one registered voice
    assert report.wall_s > 0 and report.throughput > 0


def test_concurrent_failures_are_counted() -> None:
    model = FakeCosyVoice3(fail_with=RuntimeError("boom"))
    [zero_shot, *_] = smoke_cases(voice(5), TRANSCRIPT, TEXT, "Hi.", [])
    report = run_concurrent(CosyVoice3Engine(model), zero_shot.request, concurrency=2, rounds=1)
    assert len(report.outcomes) == 2 and report.succeeded == [] and report.throughput == 0


def test_percentiles_are_p50_and_p99() -> None:
    assert percentiles([4.0, 1.0, 3.0, 2.0]) == pytest.approx((2.5, 3.97))
    assert percentiles([0.5]) == (0.5, 0.5)


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "me.wav"
    path.write_bytes(encode_audio(voice(6), "wav"))
    return path


@pytest.fixture
def smoke_argv(
    model_dir: Path, fake_upstream: list, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """`ops gpu-smoke` on the stand-in upstream and GPU, without a transcript yet; WAVs to tmp/smoke."""
    monkeypatch.setattr(gpu_smoke, "_gpu_name", lambda: "a stand-in GPU")
    monkeypatch.setenv("COSYVOICE_TEXT_FRONTEND", "none")
    out = tmp_path / "smoke"
    return ["gpu-smoke", "--model-dir", str(model_dir), "--prompt", str(recording), "--out", str(out)]


def test_gpu_smoke_command_with_a_stand_in_model(smoke_argv: list[str], tmp_path: Path, capsys: Any) -> None:
    argv, out = smoke_argv, tmp_path / "smoke"

    assert cli.main(argv) == 1  # no transcript
    assert cli.main([*argv, "--prompt-text", TRANSCRIPT, "--preset", "sichuan"]) == 0

    printed = capsys.readouterr().out
    assert "on a stand-in GPU" in printed and "vLLM off" in printed
    assert "first chunk" in printed and "RTF" in printed
    assert "concurrency 1 x 3 rounds: 3 zero-shot streams" in printed
    names = ["prompt", "zero_shot", "zero_shot_registered", "cross_lingual", "instruct_sichuan"]
    assert sorted(p.stem for p in out.glob("*.wav")) == sorted(names)


def test_gpu_smoke_command_with_concurrency_prints_percentiles(smoke_argv: list[str], capsys: Any) -> None:
    argv = list(smoke_argv)
    argv += ["--prompt-text", TRANSCRIPT, "--preset", "happy", "--concurrency", "2", "--rounds", "2"]

    assert cli.main(argv) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "concurrency 2 x 2 rounds: 4 zero-shot streams of the registered voice, 0 failed" in lines
    assert any("one stream at a time" in line and "wait" in line for line in lines)
    stats = {line.split(" p50 ")[0].strip(): line for line in lines if " p50 " in line}
    assert set(stats) == {"first chunk", "total"}
    assert all(re.search(r"p50 +\d+\.\d{3} s +p99 +\d+\.\d{3} s", line) for line in stats.values())
    [throughput] = [line for line in lines if line.strip().startswith("throughput")]
    assert "s of audio per wall-clock second" in throughput


def test_gpu_smoke_loads_with_the_stall_and_vllm_settings(
    recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    loads: list[dict[str, Any]] = []

    def load(model_dir: str | None, **options: Any) -> CosyVoice3Engine:
        loads.append({"model_dir": model_dir, **options})
        return CosyVoice3Engine(FakeCosyVoice3())

    monkeypatch.setattr(gpu_smoke.CosyVoice3Engine, "load", load)
    monkeypatch.setattr(gpu_smoke, "_gpu_name", lambda: "a stand-in GPU")
    env = {"COSYVOICE_MODEL_DIR": "/models/x", "COSYVOICE_STALL_S": "7.5", "COSYVOICE_VLLM": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = ["gpu-smoke", "--prompt", str(recording), "--prompt-text", TRANSCRIPT, "--out", str(tmp_path)]

    assert cli.main([*argv, "--rounds", "1"]) == 0
    [options] = loads
    assert options["model_dir"] == "/models/x"
    assert options["stall_s"] == 7.5 and options["vllm"] is True
    assert "vLLM on" in capsys.readouterr().out
