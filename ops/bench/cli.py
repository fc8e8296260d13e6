"""Benchmark VoiceRelay on this machine. `pipeline` (the default): pipeline overhead, worker scaling,
the result cache, the seed article's subprocess-per-request design side by side, and the gateway's
accept rate. `streaming`: time to first audio over the HTTP stream and the WebSocket
(ops/bench/streaming.py). `voices`: speaker adaptation's cost and similarity gain (ops/bench/voices.py).

`pipeline` starts its own NATS, SeaweedFS, WeChat emulator, gateway and workers (child processes on
free ports in a temp dir, all stopped at the end). Each prints tables and writes JSON to
ops/bench/results/. See docs/BENCHMARKS.md for what each number means.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ops.bench import scenarios
from ops.bench.harness import bench_stack, run_and_report
from ops.bench.report import RESULTS_DIR, machine, ms, ratio, table
from ops.bench.seed_baseline import server_kind
from ops.samples import speech_sample

log = logging.getLogger(__name__)

RESULT_KEYS = ("meta", "pipeline_overhead", "throughput", "cache", "seed_baseline", "gateway_accept")


@dataclass(frozen=True, slots=True)
class Plan:
    """How many requests each scenario sends."""

    overhead: dict[int, int]  # concurrency -> requests
    # Concurrency -> how many of that (a) row's texts the seed baseline also gets (the first ones):
    # each of its requests loads the models and analyses the voice, seconds of CPU, so it gets fewer.
    seed: dict[int, int]
    throughput_n: int
    throughput_delay_s: float
    throughput_concurrency: int
    cache_n: int
    accept_n: int
    accept_concurrency: int


DEFAULT_PLAN = Plan(
    overhead={1: 30, 8: 64, 32: 128},
    seed={1: 8, 8: 16},
    throughput_n=48,
    throughput_delay_s=0.2,
    throughput_concurrency=16,
    cache_n=10,
    accept_n=200,
    accept_concurrency=16,
)
# Every client is a user with a voice of its own, analysed once in the warm-up: few clients keep it short.
QUICK_PLAN = Plan(
    overhead={1: 3, 4: 4, 8: 8},
    seed={1: 1, 8: 2},
    throughput_n=6,
    throughput_delay_s=0.05,
    throughput_concurrency=4,
    cache_n=2,
    accept_n=20,
    accept_concurrency=8,
)


async def measure(plan: Plan, base_dir: Path, *, quick: bool) -> dict[str, Any]:
    """Run every scenario against a fresh stack; (e) last, since it leaves a backlog of queued jobs."""
    texts = scenarios.Texts()
    sample_wav = speech_sample("wav")
    started = time.time()
    connector = aiohttp.TCPConnector(limit=0)
    async with bench_stack(base_dir) as stack, aiohttp.ClientSession(connector=connector) as http:
        await stack.start_worker()
        most = max(*plan.overhead, plan.throughput_concurrency, plan.accept_concurrency)
        users = await scenarios.new_users(http, stack.gateway_url, sample_wav, most)
        await scenarios.warm_up(users, texts)
        log.info("(a) pipeline overhead")
        batches = {c: texts.take(n) for c, n in plan.overhead.items()}
        overhead = await scenarios.pipeline_overhead(stack, users, batches)
        log.info("(c) cache")
        cache = await scenarios.cache(users[0], texts.take(plan.cache_n))
        log.info("(d) seed baseline")
        seed_url = await stack.start_seed_baseline(base_dir / "seed")
        seed_rows = await scenarios.seed_baseline(
            http, seed_url, sample_wav, {c: batches[c][:n] for c, n in plan.seed.items()}
        )
        log.info("(b) throughput")
        throughput = await scenarios.throughput(
            stack,
            users,
            texts,
            n=plan.throughput_n,
            delay_s=plan.throughput_delay_s,
            concurrency=plan.throughput_concurrency,
        )
        log.info("(e) gateway accept")
        accept = await scenarios.gateway_accept(
            stack, users, texts.take(plan.accept_n), plan.accept_concurrency
        )
    relay_by_c = {row["concurrency"]: row for row in overhead}
    comparison = []
    for seed in seed_rows:
        relay = relay_by_c[seed["concurrency"]]
        comparison.append(
            {
                "concurrency": seed["concurrency"],
                "n": seed["n"],
                "seed": seed,
                "voicerelay": {k: relay[k] for k in ("e2e_p50_s", "e2e_p99_s", "throughput_per_s")},
                "latency_p50_ratio": ratio(seed["e2e_p50_s"], relay["e2e_p50_s"]),
                "latency_p99_ratio": ratio(seed["e2e_p99_s"], relay["e2e_p99_s"]),
                "throughput_ratio": ratio(relay["throughput_per_s"], seed["throughput_per_s"]),
            }
        )
    return {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "mode": "quick" if quick else "default",
            "engine": "espeak",
            "plan": {k: getattr(plan, k) for k in Plan.__slots__},
            "machine": machine(),
            "end_to_end": "POST /v1/syntheses until the task's SSE stream says succeeded",
        },
        "pipeline_overhead": overhead,
        "throughput": throughput,
        "cache": cache,
        "seed_baseline": {"server": server_kind(), "rows": comparison},
        "gateway_accept": accept,
    }


def render(results: dict[str, Any]) -> str:
    """The results as plain-text aligned tables (times in milliseconds)."""
    out = []
    m = results["meta"]["machine"]
    out.append(
        f"VoiceRelay benchmark ({results['meta']['mode']}), engine espeak, {m['nproc']} CPUs {m['cpu_model']}"
    )
    out.append("\n(a) pipeline overhead = end-to-end - engine time (1 worker, no added delay), ms")
    out.append(
        table(
            ["clients", "n", "e2e p50", "e2e p99", "engine p50", "overhead p50", "overhead p99", "tasks/s"],
            [
                [str(r["concurrency"]), str(r["n"]), ms(r["e2e_p50_s"]), ms(r["e2e_p99_s"]),
                 ms(r["engine_p50_s"]), ms(r["overhead_p50_s"]), ms(r["overhead_p99_s"]),
                 f"{r['throughput_per_s']:.1f}"]
                for r in results["pipeline_overhead"]
            ],
        )
    )  # fmt: skip
    t = results["throughput"]
    out.append(f"\n(b) throughput, engine delay {t['engine_delay_s']} s per task, {t['concurrency']} clients")
    out.append(
        table(
            ["workers", "n", "tasks/s", "e2e p50", "e2e p99"],
            [
                [str(w), str(t[f"workers_{w}"]["n"]), f"{t[f'workers_{w}']['throughput_per_s']:.2f}",
                 ms(t[f"workers_{w}"]["e2e_p50_s"]), ms(t[f"workers_{w}"]["e2e_p99_s"])]
                for w in (1, 2)
            ],
        )
    )  # fmt: skip
    out.append(f"2 workers / 1 worker throughput: {t['scaling_2_over_1']}x")
    c = results["cache"]
    out.append(f"\n(c) identical repeat vs fresh synthesis, serial, n={c['n']}, ms")
    out.append(
        table(
            ["request", "HTTP", "p50", "p99"],
            [
                [k, "/".join(map(str, c[f"{k}_statuses"])), ms(c[f"{k}_p50_s"]), ms(c[f"{k}_p99_s"])]
                for k in ("fresh", "repeat")
            ],
        )
    )  # fmt: skip
    out.append(f"fresh / repeat p50: {c['fresh_over_repeat_p50']}x")
    s = results["seed_baseline"]
    out.append(f"\n(d) seed baseline ({s['server']}, subprocess per request) vs VoiceRelay, same texts, ms")
    out.append(
        table(
            ["clients", "n", "seed p50", "VR p50", "p50 ratio", "seed p99", "VR p99", "p99 ratio",
             "seed tasks/s", "VR tasks/s", "VR/seed tput"],
            [
                [str(r["concurrency"]), str(r["n"]),
                 ms(r["seed"]["e2e_p50_s"]), ms(r["voicerelay"]["e2e_p50_s"]),
                 f"{r['latency_p50_ratio']}x", ms(r["seed"]["e2e_p99_s"]), ms(r["voicerelay"]["e2e_p99_s"]),
                 f"{r['latency_p99_ratio']}x", f"{r['seed']['throughput_per_s']:.1f}",
                 f"{r['voicerelay']['throughput_per_s']:.1f}", f"{r['throughput_ratio']}x"]
                for r in s["rows"]
            ],
        )
    )  # fmt: skip
    out.append("p50/p99 ratio = seed baseline latency / VoiceRelay latency (>1: VoiceRelay faster)")
    a = results["gateway_accept"]
    out.append(f"\n(e) gateway accept, POST /v1/syntheses with no worker, {a['concurrency']} clients")
    out.append(
        table(
            ["n", "statuses", "accepted/s", "p50 ms", "p99 ms"],
            [[str(a["n"]), " ".join(f"{k}:{v}" for k, v in sorted(a["statuses"].items())),
              f"{a['accepted_per_s']:.1f}", ms(a["accept_p50_s"]), ms(a["accept_p99_s"])]],
        )
    )  # fmt: skip
    return "\n".join(out)


SCENARIOS = ("pipeline", "streaming", "voices")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario",
        nargs="?",
        choices=SCENARIOS,
        default="pipeline",
        help="what to measure (default pipeline)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts (seconds, for the smoke test)")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"JSON results file (default {RESULTS_DIR}/<timestamp>.json)"
    )
    parser.add_argument("--keep-dir", action="store_true", help="keep the temp dir with the services' logs")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on success, 1 when a scenario failed."""
    if args.scenario == "voices":
        from ops.bench import voices  # imported here: it loads the speech and speaker models' code

        return voices.run(args)
    if args.scenario == "streaming":
        from ops.bench import streaming

        return streaming.run(args)
    plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    return run_and_report(args, lambda base_dir: measure(plan, base_dir, quick=args.quick), render)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))
