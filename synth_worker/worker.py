"""The worker's composition root: connect, load the engine once, consume jobs, stop in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.config import Settings
from common.vocabulary import AIGC_NONE
from events import names
from events.bus import EventBus
from events.consumer import dead_letter_consumer, event_consumer
from events.state import SharedState
from events.supervision import Supervisor, shutdown_executor
from storage.objects import ObjectStore
from synth_worker.engines.base import DelayedEngine, Engine
from synth_worker.engines.registry import EngineOptions, load_engine
from synth_worker.erasure import VoiceDeletions
from synth_worker.jobs import JobRunner
from synth_worker.labels import explicit_label
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


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    engine: Engine | None = None,
    serve_health: bool = True,
    ready: asyncio.Event | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
    started: Callable[[JobRunner], object] | None = None,
) -> None:
    """Consume jobs until `stop` is set; then finish (or hand back) the job in hand and close.

    `started`, when given, is called with the job runner once the worker is ready (tests look into
    its caches).

    On stop: fetch nothing more, give the job in hand up to `grace_s` to finish, else hand it back
    (nak, so another worker takes it at once), let a speaker-similarity measurement in progress
    finish (pending ones are dropped), then drain the NATS connection and release the engine.
    """
    # Each resource is entered right after it is made, so whatever start-up step fails (no engine, NATS
    # unreachable), everything made before it is released again, in reverse order.
    async with contextlib.AsyncExitStack() as resources:
        # One engine per process and one job at a time: models are not safe to share across threads.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        resources.push_async_callback(shutdown_executor, executor)
        # The task's file is encoded on a thread of its own while the engine speaks
        # (synth_worker/output_file.py): one, so a job's pieces are encoded in order and jobs never
        # compete for it (one job at a time).
        encode_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        resources.push_async_callback(shutdown_executor, encode_executor)
        loop = asyncio.get_running_loop()
        if engine is None:
            engine = await loop.run_in_executor(
                executor, lambda: load_engine(settings.tts_engine, EngineOptions.from_settings(settings))
            )
        if settings.engine_delay_s > 0:
            engine = DelayedEngine(engine, settings.engine_delay_s)
            log.warning("every synthesis is delayed by %.1f s (ENGINE_DELAY_S)", settings.engine_delay_s)
        log.info("engine %s %s loaded", engine.name, engine.version)
        # Loaded with the engine, not in the first task: it takes seconds (torch, a numba warm-up).
        speaker_encoder = await loop.run_in_executor(executor, load_speaker_encoder)
        # The audible AIGC label, rendered once now rather than in the first task.
        await loop.run_in_executor(executor, explicit_label, settings.aigc_explicit_label)
        if settings.aigc_explicit_label == AIGC_NONE:
            log.warning(
                "AIGC_EXPLICIT_LABEL=none: outputs carry no audible AIGC label, only the implicit one in "
                "their metadata. Allowed only where the user agreement assigns labelling to the users: "
                "the operator answers for it (人工智能生成合成内容标识办法, Art. 9)"
            )
        bus = await EventBus.connect(settings.nats_urls, name="voicerelay-worker")
        resources.push_async_callback(bus.close)
        store = ObjectStore.from_settings(settings)
        resources.callback(store.close)
        metrics = WorkerMetrics()
        await bus.ensure_topology(
            audit_max_age_s=settings.audit_max_age_s,
            output_max_age_s=settings.output_max_age_s,
            replicas=settings.nats_replicas,
        )
        await store.ensure_bucket()
        runner = JobRunner(
            bus=bus,
            state=SharedState(bus),
            store=store,
            engine=engine,
            executor=executor,
            metrics=metrics,
            encode_executor=encode_executor,
            speaker_encoder=speaker_encoder,
            aigc_label=settings.aigc_explicit_label,
            aigc_producer=settings.aigc_producer,
        )
        # Closed once the consumers have stopped (entered below, so they exit first) and before the
        # store, the bus and the executor: its background work (speaker similarity) needs all three.
        resources.push_async_callback(runner.close)
        if serve_health:
            await resources.enter_async_context(health_server(settings, metrics, bus))
        supervisor = await resources.enter_async_context(Supervisor("worker"))
        # Voice deletions, heard by every worker: forget what this process keeps of the voice. Started
        # first so that it stops last, and subscribed before any job runs, so no deletion is missed.
        deletions = await VoiceDeletions.follow(bus, runner.voice_deleted)
        supervisor.start(names.WORKER_ERASURE_FOLLOWER, deletions.run, grace_s=grace_s)
        # Jobs that ran out of deliveries (names.DEADLETTER_STREAM). Started first so that it stops
        # last: the job in hand is finished or handed back while dead letters are still handled.
        supervisor.start(
            names.WORKER_DEADLETTER_CONSUMER,
            dead_letter_consumer(bus, names.WORKER_DEADLETTER_CONSUMER, runner.dead_letter).run,
            grace_s=grace_s,
        )
        supervisor.start(
            names.WORKER_CONSUMER, event_consumer(bus, names.WORKER_CONSUMER, runner).run, grace_s=grace_s
        )
        log.info("worker ready")
        if started is not None:
            started(runner)
        if ready is not None:
            ready.set()
        # A consumer that ends first raises WorkEnded: the process exits and is restarted instead of
        # idling with no consumer.
        await supervisor.watch(stop)
        log.info("worker stopping: finishing the job in hand")
    log.info("worker stopped")
