"""The CosyVoice3 engine through upstream's real code: a weight-free model, upstream's own pins, a CPU.

`tests/test_cosyvoice3.py` checks the adapter against a recording fake; this runs it through
upstream's `CosyVoice3` class in its own environment (`make upstream-env`: torch 2.3.1 and the rest of
upstream's pins, built by ops/docker/install_cosyvoice.sh, the GPU image's recipe), on a model
directory with random weights (`make_tiny.py` of the upstream test material). The audio is noise;
the code path is upstream's.

Upstream's source comes from COSYVOICE_UPSTREAM_SRC, else `../shared/cosyvoice3-upstream/src` beside
the repository; the weight-free recipe from COSYVOICE_TINY_RECIPE, else `../tiny` of that source.
Without them, or without the environment, the tests skip and say what is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# The first test pays for the tiny model and the driver's three loads (a minute or two on 2 cores).
pytestmark = [pytest.mark.upstream, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_ENV = REPO_ROOT / ".venv-cosyvoice"
UPSTREAM_PYTHON = UPSTREAM_ENV / "bin" / "python"
WETEXT_DIR = UPSTREAM_ENV / "wetext"  # written by `make upstream-env` (ops/docker/fetch_wetext.py)
DRIVER = REPO_ROOT / "tests" / "upstream" / "drive_cosyvoice3.py"


def _source() -> Path:
    return Path(
        os.environ.get("COSYVOICE_UPSTREAM_SRC") or REPO_ROOT.parent / "shared/cosyvoice3-upstream/src"
    )


def _recipe() -> Path:
    return Path(os.environ.get("COSYVOICE_TINY_RECIPE") or _source().parent / "tiny")


def _require_material() -> None:
    if not (_source() / "cosyvoice").is_dir():
        pytest.skip(f"no upstream CosyVoice source at {_source()} (set COSYVOICE_UPSTREAM_SRC)")
    if not (_recipe() / "make_tiny.py").is_file():
        pytest.skip(f"no weight-free model recipe at {_recipe()} (set COSYVOICE_TINY_RECIPE)")
    if not UPSTREAM_PYTHON.is_file():
        pytest.skip(f"no upstream environment at {UPSTREAM_PYTHON.parent.parent}: run `make upstream-env`")


def _run(*args: str, timeout_s: float) -> str:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(_source()), str(REPO_ROOT)]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    done = subprocess.run(
        [str(UPSTREAM_PYTHON), *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require_material()
    directory = tmp_path_factory.mktemp("cosyvoice3-tiny")
    _run(str(_recipe() / "make_tiny.py"), str(directory), timeout_s=300)
    # A random LLM may stop after a token or two, too little audio for the flow's convolutions; this
    # one talks until upstream's length limit (and gives streaming several chunks).
    _run(str(_recipe() / "tweak_llm.py"), str(directory), timeout_s=120)
    return directory


@pytest.fixture(scope="module")
def report(tiny_model: Path) -> dict:
    return json.loads(_run(str(DRIVER), str(tiny_model), str(WETEXT_DIR), timeout_s=900).splitlines()[-1])


@pytest.mark.parametrize("mode", ["zero_shot", "instruct", "cross_lingual"])
def test_every_mode_returns_audio_through_upstream(report: dict, mode: str) -> None:
    outcome = report["modes"][mode]
    assert "error" not in outcome, outcome
    assert outcome["sample_rate_hz"] == 24_000
    assert outcome["samples"] > 0 and outcome["finite"]


def test_each_voice_is_registered_once_per_prompt_text(report: dict) -> None:
    """Zero-shot's registration (cross-lingual shares it) and one for the instruct preset."""
    assert report["registered_speakers"] == 2


def test_the_prompt_reaches_upstream_at_24khz(report: dict) -> None:
    """What upstream reads of the voice sample: 24 kHz, the rate its flow takes prompt features at."""
    rates = {rate for outcome in report["modes"].values() for rate in outcome.get("prompt_rates_read_hz", [])}
    assert rates == {24_000}


@pytest.mark.parametrize("mode", ["zero_shot", "instruct", "cross_lingual"])
def test_every_mode_streams_in_several_chunks(report: dict, mode: str) -> None:
    stream = report["modes"][mode]["stream"]
    assert len(stream["chunk_samples"]) >= 3, stream
    assert all(size > 0 for size in stream["chunk_samples"])


def test_the_next_streams_first_chunk_is_no_later_than_the_first_streams(report: dict) -> None:
    """Upstream doubles its hop within a request and never resets it; the engine does."""
    first, second = report["consecutive_streams"]
    assert second["chunk_samples"][0] <= first["chunk_samples"][0], (first, second)
    assert second["chunk_samples"][0] == report["modes"]["zero_shot"]["stream"]["chunk_samples"][0]


@pytest.mark.parametrize("how", ["stream", "whole"])
def test_an_exception_in_upstreams_llm_thread_is_an_engine_error_not_a_hang(report: dict, how: str) -> None:
    outcome = report["llm_failure"][how]
    assert outcome["outcome"].startswith("EngineError") and "injected" in outcome["outcome"], outcome
    assert outcome["seconds"] < 60  # COSYVOICE_STALL_S's default bound; it came at once in fact


def test_after_an_llm_failure_the_engine_streams_again(report: dict) -> None:
    assert len(report["llm_failure"]["afterwards"]["chunk_samples"]) >= 3


def test_wetext_normalises_offline_from_the_shipped_files(report: dict) -> None:
    assert report["wetext"]["text_frontend"] == "wetext"
    normalised = report["wetext"]["normalised"]
    assert not any(ch.isdigit() for ch in normalised), normalised  # numbers are read out as words
    assert "二零二五年三月五日" in normalised, normalised


def test_without_the_files_the_load_fails_and_says_how_to_fix_it(report: dict) -> None:
    message = report["frontends"]["wetext_without_files"]
    assert message.startswith("EngineUnavailable") and "COSYVOICE_WETEXT_DIR" in message, message
    assert "COSYVOICE_TEXT_FRONTEND=none" in message


def test_none_is_an_explicit_choice_that_loads(report: dict) -> None:
    assert report["frontends"]["none"]["text_frontend"] == ""
    assert "2025" in report["frontends"]["none"]["normalised"]  # read as written
