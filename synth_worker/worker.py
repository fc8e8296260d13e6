"""The worker's composition root: connect, load the engine once, consume jobs, stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.config import Settings
from events import names
from events.bus import EventBus
from events.consumer import ConsumerLoop, consuming, consuming_dead_letters
from events.state import SharedState
from storage.objects import ObjectStore
from synth_worker.engines.base import DelayedEngine, Engine, load_engine
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics
from synth_worker.speaker.embedding import SpeakerEncoder, shared_encoder

log = logging.getLogger(__name__)

# How long a job in hand may take to finish when the worker is asked to stop, before it is handed back.
SHUTDOWN_GRACE_S = 30.0


@contextlib.asynccontextmanager
async def health_server(settings: Settings, metrics: WorkerMetrics, bus: EventBus) -> AsyncIterator[None]:
    """/healthz and /metrics for process supervisors and Prometheus."""

    async def healthz(request: web.Request) -> web.Response:
        ok = bus.is_connected
        return web.json_response({"status": "ok" if ok else "disconnected"}, status=200 if ok else 503)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.worker_metrics_host, settings.worker_metrics_port).start()
        yield
    finally:
        await runner.cleanup()


def load_speaker_encoder() -> SpeakerEncoder | None:
    """The process's speaker encoder for the similarity signal, or None (logged) when Resemblyzer or
    torch is not installed: the worker then runs without the signal. Blocking (seconds)."""
    try:
        import torch

        # One intra-op thread: a worker runs one job at a time and shares the cores with other workers
        # and services. With torch's default (a thread per core) an embedding took 0.3-1.7 s instead of
        # 0.1 s on a busy 2-core machine (OpenMP threads spinning against each other), and espeak's
        # speaker analysis, ten embeddings, 20 s instead of 3.5 s.
        torch.set_num_threads(1)
        return shared_encoder()
    except ImportError as exc:
        log.warning("speaker similarity is off: the speaker encoder cannot be imported (%s)", exc)
        return None


class ConsumerStopped(RuntimeError):
    """A consumer loop ended while the worker was meant to run (a bug, or NATS gone for good)."""


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    engine: Engine | None = None,
    serve_health: bool = True,
    ready: asyncio.Event | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
) -> None:
    """Consume jobs until `stop` is set; then finish (or hand back) the job in hand and close.

    On stop: fetch nothing more, give the job in hand up to `grace_s` to finish, else hand it back
    (nak, so another worker takes it at once), then drain the NATS connection and release the engine.
    """
    # One engine per process and one job at a time: models are not safe to share across threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    loop = asyncio.get_running_loop()
    if engine is None:
        engine = await loop.run_in_executor(
            executor, lambda: load_engine(settings.tts_engine, model_dir=settings.cosyvoice_model_dir)
        )
    if settings.engine_delay_s > 0:
        engine = DelayedEngine(engine, settings.engine_delay_s)
        log.warning("every synthesis is delayed by %.1f s (ENGINE_DELAY_S)", settings.engine_delay_s)
    log.info("engine %s %s loaded", engine.name, engine.version)
    # Loaded with the engine, not in the first task: it takes seconds (torch, a numba warm-up).
    speaker_encoder = await loop.run_in_executor(executor, load_speaker_encoder)
    bus = await EventBus.connect(settings.nats_urls, name="voicerelay-worker")
    store = ObjectStore.from_settings(settings)
    metrics = WorkerMetrics()
    try:
        await bus.ensure_topology(audit_max_age_s=settings.audit_max_age_s, replicas=settings.nats_replicas)
        await store.ensure_bucket()
        runner = JobRunner(
            bus=bus,
            state=SharedState(bus),
            store=store,
            engine=engine,
            executor=executor,
            metrics=metrics,
            speaker_encoder=speaker_encoder,
        )
        async with contextlib.AsyncExitStack() as stack:
            if serve_health:
                await stack.enter_async_context(health_server(settings, metrics, bus))
            # Jobs that ran out of deliveries (names.DEADLETTER_STREAM). Entered first so that it stops
            # last: the job in hand is finished or handed back while dead letters are still handled.
            dead_letters = await stack.enter_async_context(
                consuming_dead_letters(bus, names.WORKER_DEADLETTER_CONSUMER, runner.dead_letter)
            )
            jobs = await stack.enter_async_context(
                consuming(bus, names.WORKER_CONSUMER, runner, grace_s=grace_s)
            )
            log.info("worker ready")
            if ready is not None:
                ready.set()
            await _until_stopped(stop, jobs, dead_letters)
            log.info("worker stopping: finishing the job in hand")
    finally:
        await bus.close()
        store.close()
        # A job cancelled past the grace period may still run in the engine thread; wait for it off the
        # event loop, so whatever else shares the loop keeps going meanwhile.
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        log.info("worker stopped")


async def _until_stopped(stop: asyncio.Event, *loops: ConsumerLoop) -> None:
    """Wait for `stop`; raise ConsumerStopped if a loop ends first, so the process exits and is restarted
    instead of idling with no consumer."""
    stopped = asyncio.create_task(stop.wait(), name="worker-stop")
    tasks = {loop.task for loop in loops if loop.task is not None}
    try:
        await asyncio.wait({stopped, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopped
    if stop.is_set():
        return
    ended = next(task for task in tasks if task.done())
    reason = ended.exception() if not ended.cancelled() else None
    raise ConsumerStopped(f"{ended.get_name()} ended: {reason!r}") from reason
