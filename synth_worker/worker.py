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
from events.consumer import consuming
from events.state import SharedState
from storage.objects import ObjectStore
from synth_worker.engines.base import Engine, load_engine
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics

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


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    *,
    engine: Engine | None = None,
    serve_health: bool = True,
    ready: asyncio.Event | None = None,
) -> None:
    """Consume jobs until `stop` is set; then finish (or hand back) the job in hand and close."""
    # One engine per process and one job at a time: models are not safe to share across threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
    loop = asyncio.get_running_loop()
    if engine is None:
        engine = await loop.run_in_executor(
            executor, lambda: load_engine(settings.tts_engine, model_dir=settings.cosyvoice_model_dir)
        )
    log.info("engine %s %s loaded", engine.name, engine.version)
    bus = await EventBus.connect(settings.nats_urls, name="voicerelay-worker")
    store = ObjectStore(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        settings.s3_bucket,
        secure=settings.s3_secure,
    )
    metrics = WorkerMetrics()
    try:
        await bus.ensure_topology(audit_max_age_s=settings.audit_max_age_s)
        await store.ensure_bucket()
        runner = JobRunner(
            bus=bus, state=SharedState(bus), store=store, engine=engine, executor=executor, metrics=metrics
        )
        async with contextlib.AsyncExitStack() as stack:
            if serve_health:
                await stack.enter_async_context(health_server(settings, metrics, bus))
            await stack.enter_async_context(
                consuming(bus, names.WORKER_CONSUMER, runner, grace_s=SHUTDOWN_GRACE_S)
            )
            log.info("worker ready")
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("worker stopping: finishing the job in hand")
    finally:
        await bus.close()
        store.close()
        executor.shutdown(wait=True, cancel_futures=True)
        log.info("worker stopped")
