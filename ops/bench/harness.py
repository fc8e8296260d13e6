"""The stack a benchmark runs against: NATS, SeaweedFS, the WeChat emulator, the gateway and workers,
all as child processes on free ports in a temp dir (the benchmark process only generates load), plus
the seed baseline server. Every child is owned by one `ops.services.stack.Stack` or the worker list and is
stopped when `bench_stack()` exits, however it exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import Settings
from common.logs import configure_logging
from events.bus import EventBus
from events.names import EventType
from events.replay import follow_events
from ops.bench.report import RESULTS_DIR
from ops.services.nats import NatsServer
from ops.services.ports import free_port
from ops.services.processes import LOCALHOST, ManagedProcess, http_probe, python_service, stop_all
from ops.services.s3 import SeaweedS3
from ops.services.stack import Stack

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "voicerelay-bench"
START_TIMEOUT_S = 60.0
# The worker drains its in-flight job on SIGTERM (up to 30 s grace); past this it is killed.
STOP_TIMEOUT_S = 45.0


class BenchError(RuntimeError):
    """A request the benchmark needs did not succeed."""


@dataclass
class BenchStack:
    gateway_url: str
    env: dict[str, str]  # the configuration (Settings.to_env) every service of this stack gets
    log_dir: Path
    bus: EventBus  # the benchmark's own connection: it reads completed events for engine time
    synthesis_s: dict[str, float] = field(default_factory=dict)  # task_id -> engine seconds
    first_audio_s: dict[str, float] = field(default_factory=dict)  # task_id -> engine's first piece
    queue_s: dict[str, float] = field(default_factory=dict)  # task_id -> waiting for a worker
    workers: list[ManagedProcess] = field(default_factory=list)
    _children: Stack = field(default_factory=Stack)

    async def start_worker(self, *, engine_delay_s: float = 0.0) -> ManagedProcess:
        """One more `python -m synth_worker`, ready once it consumes."""
        port = free_port()
        env = dict(self.env, WORKER_METRICS_PORT=str(port), ENGINE_DELAY_S=str(engine_delay_s))
        n = len(self.workers) + 1
        worker = python_service(
            f"worker{n}",
            "synth_worker",
            env,
            self.log_dir / f"worker{n}.log",
            port=port,
            health="/healthz",
            ready_line="worker ready",
        )
        self.workers.append(worker)
        worker.start()
        await worker.wait_ready()
        return worker

    async def stop_workers(self) -> None:
        """SIGTERM every worker (each finishes its job first); none is left running."""
        workers, self.workers = self.workers, []
        await stop_all(workers, STOP_TIMEOUT_S)

    async def start_seed_baseline(self, workdir: Path) -> str:
        """The seed article's server (ops/bench/seed_baseline.py) as a child; returns its base URL."""
        port = free_port()
        url = f"http://{LOCALHOST}:{port}"
        process = ManagedProcess(
            "seed-baseline",
            [sys.executable, "-m", "ops.bench.seed_baseline", "--port", str(port), "--workdir", str(workdir)],
            log_path=self.log_dir / "seed-baseline.log",
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cwd=REPO_ROOT,
            url=url,
            probe=http_probe(url + "/healthz"),
            start_timeout_s=START_TIMEOUT_S,
        )
        await self._children.start(process)
        return url

    async def engine_times(
        self, task_ids: list[str], *, timeout_s: float = 15.0, first_audio: bool = False
    ) -> dict[str, float]:
        """synthesis_s (or first_audio_s) of each task's completed event, waiting for events still on
        their way."""
        times = self.first_audio_s if first_audio else self.synthesis_s
        async with asyncio.timeout(timeout_s):
            while missing := [t for t in task_ids if t not in times]:
                log.debug("waiting for %d completed events", len(missing))
                await asyncio.sleep(0.05)
        return {t: times[t] for t in task_ids}


async def _collect_engine_times(stack: BenchStack, subscribed: asyncio.Event) -> None:
    """Record synthesis_s and first_audio_s from every completed event published from now on (the
    worker's own timing of the engine)."""
    async for event in follow_events(
        stack.bus, subjects=EventType.SYNTHESIS_COMPLETED, on_subscribed=subscribed.set
    ):
        for name, into in (("synthesis_s", stack.synthesis_s), ("first_audio_s", stack.first_audio_s)):
            seconds = event.data.get(name)
            if event.task_id and isinstance(seconds, int | float):
                into[event.task_id] = float(seconds)
        queue_ms = (event.data.get("timings_ms") or {}).get("queue")
        if event.task_id and isinstance(queue_ms, int | float):
            stack.queue_s[event.task_id] = queue_ms / 1000


@contextlib.asynccontextmanager
async def bench_stack(base_dir: Path, *, queue_max_pending: int = 10_000) -> AsyncIterator[BenchStack]:
    """NATS, S3, emulator and gateway started and ready; workers are added by the caller."""
    log_dir = base_dir / "logs"
    children = Stack(stop_timeout_s=STOP_TIMEOUT_S)
    stack: BenchStack | None = None
    collector: asyncio.Task[None] | None = None
    try:
        nats = NatsServer.on_free_ports(base_dir / "nats", log_path=log_dir / "nats.log")
        await children.start(nats)
        s3 = SeaweedS3.on_free_ports(base_dir / "s3", buckets=(BUCKET,), log_path=log_dir / "s3.log")
        await children.start(s3)
        gateway_port, emulator_port = free_port(), free_port()
        gateway_url = f"http://{LOCALHOST}:{gateway_port}"
        settings = dataclasses.replace(
            Settings.from_env(),
            nats_urls=(nats.url or "",),
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_bucket=BUCKET,
            s3_secure=False,
            wechat_api_base=f"http://{LOCALHOST}:{emulator_port}",
            gateway_port=gateway_port,
            public_base_url=gateway_url,
            session_secret="voicerelay-bench-session-secret-32b",
            # One benchmark user sends every request, clients log in from one address: no limit may be
            # what is measured.
            rate_limit_per_minute=1_000_000,
            logins_per_minute=1_000_000,
            uploads_per_hour=1_000_000,
            voices_per_user=100_000,
            queue_max_pending=queue_max_pending,
            worker_metrics_port=free_port(),
            engine_delay_s=0.0,
            log_level="INFO",
        )
        env = {
            **os.environ,
            **settings.to_env(),
            "EMULATOR_PORT": str(emulator_port),
            "WECHAT_PUSH_URL": f"{gateway_url}/wechat/push",
            "PYTHONUNBUFFERED": "1",
        }
        await children.start(
            python_service(
                "emulator",
                "wechat_emulator",
                env,
                log_dir / "emulator.log",
                port=emulator_port,
                health="/healthz",
                ready_line="",
            )
        )
        await children.start(
            python_service(
                "gateway",
                "wechat_adapter",
                env,
                log_dir / "gateway.log",
                port=gateway_port,
                health="/readyz",
                ready_line="listening on",
            )
        )
        bus = await EventBus.connect((env["NATS_URL"],), name="bench")
        stack = BenchStack(gateway_url, env, log_dir, bus, _children=children)
        subscribed = asyncio.Event()
        collector = asyncio.create_task(_collect_engine_times(stack, subscribed))
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield stack
    finally:
        if stack is not None:
            await stack.stop_workers()
        if collector is not None:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
        if stack is not None:
            await stack.bus.close()
        await children.stop()


def run_and_report(
    args: argparse.Namespace,
    measure: Callable[[Path], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    *,
    prefix: str = "",
) -> int:
    """Run one benchmark over a fresh temp dir, write its JSON (`--out`, else
    ops/bench/results/<prefix><timestamp>.json), print its tables; 0, or 1 when a scenario failed.
    `--keep-dir` keeps the services' logs."""
    configure_logging("INFO", process="bench")
    out = args.out or RESULTS_DIR / f"{prefix}{time.strftime('%Y%m%dT%H%M%S')}.json"
    base_dir = Path(tempfile.mkdtemp(prefix="voicerelay-bench-"))
    try:
        results = asyncio.run(measure(base_dir))
    except (BenchError, TimeoutError) as exc:
        print(f"benchmark failed: {exc}; service logs in {base_dir / 'logs'}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(render(results))
    print(f"\nresults: {out}")
    if args.keep_dir:
        print(f"logs: {base_dir / 'logs'}")
    else:
        shutil.rmtree(base_dir, ignore_errors=True)
    return 0
