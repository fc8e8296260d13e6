"""`python -m ops.bench --quick` and `python -m ops bench voices --quick` run end to end and report
every scenario.

Only the shape of the output is checked, never a timing: numbers depend on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.bench.cli import RESULT_KEYS
from ops.bench.voices import RESULT_KEYS as VOICE_RESULT_KEYS

# The quick benchmarks start their own NATS, S3, gateway and workers.
pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_quick(*args: str) -> str:
    """Run a benchmark command with --quick; its stdout (the tables), after checking it succeeded."""
    done = subprocess.run(
        [sys.executable, "-m", *args, "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(300)
def test_quick_benchmark_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    stdout = run_quick("ops.bench", "--out", str(out))
    for heading in ("(a) pipeline overhead", "(b) throughput", "(c) identical repeat", "(d) seed baseline"):
        assert heading in stdout
    assert "(e) gateway accept" in stdout
    assert "p50 ratio" in stdout

    results = json.loads(out.read_text())
    assert set(RESULT_KEYS) <= results.keys()
    assert results["meta"]["mode"] == "quick"
    assert {"nproc", "cpu_model", "python"} <= results["meta"]["machine"].keys()
    assert [row["concurrency"] for row in results["pipeline_overhead"]] == [1, 4, 8]
    for row in results["pipeline_overhead"]:
        assert {"e2e_p50_s", "e2e_p99_s", "engine_p50_s", "overhead_p50_s", "overhead_p99_s"} <= row.keys()
    assert {"workers_1", "workers_2", "scaling_2_over_1"} <= results["throughput"].keys()
    assert results["cache"]["fresh_statuses"] == [202]
    assert results["cache"]["repeat_statuses"] == [200]
    seed_rows = results["seed_baseline"]["rows"]
    assert [row["concurrency"] for row in seed_rows] == [1, 8]
    ratios = {"latency_p50_ratio", "latency_p99_ratio", "throughput_ratio"}
    for row in seed_rows:
        assert {"seed", "voicerelay", *ratios} <= row.keys()
    assert results["gateway_accept"]["statuses"] == {"202": results["gateway_accept"]["n"]}


@pytest.mark.timeout(300)
def test_quick_voice_benchmark_prints_tables_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "voices.json"
    stdout = run_quick("ops", "bench", "voices", "--out", str(out))
    for heading in ("synthesis speed", "cost of a new voice", "speaker similarity to the reference"):
        assert heading in stdout

    results = json.loads(out.read_text())
    assert set(VOICE_RESULT_KEYS) <= results.keys()
    assert results["meta"]["mode"] == "quick"
    assert results["meta"]["profile_version"].startswith(results["meta"]["engine"])
    for profile in ("plain", "adapted"):
        assert results["synthesis"][profile]["rtf_p50"] > 0
    new_voice = results["new_voice"]
    assert new_voice["intake"]["sample_s"] == 10.0
    assert new_voice["analysis_first_s"] > 0 and new_voice["analysis_next_p50_s"] > 0
    rows = results["similarity"]["rows"]
    speakers = {row["speaker"] for row in rows}
    assert len(rows) >= 2 and {row["other_speaker"] for row in rows} <= speakers
    for row in rows:
        for key in ("plain", "adapted", "adapted_vs_other", "loudness_corr"):
            assert -1.0 <= row[key] <= 1.0
        assert row["margin"] == pytest.approx(row["adapted"] - row["adapted_vs_other"], abs=0.002)


@pytest.mark.timeout(300)
def test_quick_streaming_benchmark_prints_tables_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "streaming.json"
    stdout = run_quick("ops", "bench", "streaming", "--out", str(out))
    assert "Time to first audio" in stdout and "200-character text" in stdout

    results = json.loads(out.read_text())
    assert results["meta"]["mode"] == "quick"
    assert [(r["transport"], r["concurrency"]) for r in results["first_audio"]] == [
        ("http", 1), ("http", 4), ("socket", 1), ("socket", 4),
    ]  # fmt: skip
    for row in results["first_audio"]:
        assert row["ttfa_p50_s"] >= row["engine_first_p50_s"] > 0
    assert results["long_text"]["chars"] == 200 and results["long_text"]["ratio_p50"] > 0
