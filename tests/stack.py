"""The whole VoiceRelay stack for tests: gateway, worker and WeChat emulator on real ports,
over the real nats-server and S3 fixtures. Imported into conftest.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.config import Settings
from common.ids import new_id
from common.owners import owned_key
from events import names
from events.bus import CONSUMERS, EventBus
from events.envelope import Envelope, utc_now_iso
from events.records import TaskRecord, TaskStatus
from events.state import SharedState
from events.task_events import requested_event
from ops.client import ApiClient
from ops.samples import SAMPLE_TEXT, speech, speech_sample  # noqa: F401  (re-exported for tests)
from ops.services.nats import NatsServer
from ops.services.ports import free_port
from ops.services.s3 import SeaweedS3
from storage.objects import ObjectStore
from synth_worker.engines.base import Engine
from synth_worker.jobs import JobRunner
from synth_worker.worker import run_worker
from wechat_adapter.app import create_app
from wechat_adapter.context import Gateway
from wechat_adapter.http.requests import GATEWAY
from wechat_emulator.app import EMULATOR_KEY, Emulator, EmulatorConfig, create_emulator_app

# How long a worker may take to start before a test calls it broken: a bound for a hang, not a speed
# goal. A warm start takes a few seconds; the first one on a fresh machine loads torch and the
# speaker encoder from a cold disk while NATS, S3 and the gateway start beside it on two cores, and
# took over 30 s in a fresh CI checkout (16 s for the imports alone after dropping the page cache).
WORKER_START_S = 120


@dataclass
class Stack:
    settings: Settings
    emulator: Emulator
    bus: EventBus  # the tests' own connection, for looking at the stream
    store: ObjectStore
    http: aiohttp.ClientSession
    # The session gateway's services, for tests that inject a fault into it (None in stacks whose
    # gateway runs elsewhere).
    gateway: Gateway | None = None
    # The session worker's job runner, for tests that slow its engine down (None likewise).
    worker: JobRunner | None = None

    @property
    def url(self) -> str:
        return self.settings.public_base_url

    def client(self) -> ApiClient:
        return ApiClient(self.http, self.url)

    async def user(self, name: str | None = None) -> ApiClient:
        """A freshly logged-in mini program user."""
        client = self.client()
        reply = await client.login(f"{name or uuid.uuid4().hex}:{uuid.uuid4().hex[:8]}")
        assert reply.status == 200, reply.body
        return client

    async def stream_last_seq(self) -> int:
        return (await self.bus.js.stream_info(names.STREAM)).state.last_seq

    async def settled_seq(self, *, timeout_s: float = 60.0) -> int:
        """The stream's last sequence once no consumer (worker, notifier, review) has anything pending
        or unacked: earlier tests' queued work can publish nothing more.

        A test that asserts "the stream did not move" measures from here, not from a moment when an
        earlier test's synthesis was still running and about to publish its completed event. Verdicts
        the emulator has yet to push are not waited for (`emulator.settle()` does that).
        """
        async with asyncio.timeout(timeout_s):
            while True:
                infos = [await self.bus.js.consumer_info(names.STREAM, spec.name) for spec in CONSUMERS]
                if all(info.num_pending == 0 and info.num_ack_pending == 0 for info in infos):
                    return await self.stream_last_seq()
                await asyncio.sleep(0.05)

    async def ready_voice(self, client: ApiClient, audio: bytes | None = None, **upload) -> dict:
        reply = await client.upload_voice(audio or speech_sample("wav"), **upload)
        assert reply.status == 201, reply.body
        voice = await client.wait_voice(reply.body["voice_id"])
        assert voice["status"] == "ready", voice
        return voice


async def queued_job(
    state: SharedState,
    owner: str,
    voice_id: str,
    *,
    text: str,
    audio_format: str = "mp3",
    trace_id: str = "tr_test",
) -> tuple[TaskRecord, Envelope]:
    """A queued zero-shot task on the owner's voice, filed in KV, and its job as the gateway publishes
    it (texts sealed with the owner's key): for tests that hand jobs to a runner themselves."""
    voice = await state.voices.get(owner, voice_id)
    assert voice is not None
    now = utc_now_iso()
    task = TaskRecord(
        task_id=new_id("t"), owner=owner, status=TaskStatus.QUEUED, text=text,
        voice_id=voice_id, mode="zero_shot", format=audio_format, trace_id=trace_id, created_at=now,
        updated_at=now,
    )  # fmt: skip
    await state.tasks.create(owned_key(owner, task.task_id), task)
    return task, requested_event(task, voice, await state.user_keys.key_for(owner))


@contextlib.asynccontextmanager
async def serving(app: web.Application, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def another_gateway(stack: Stack, **changes: Any) -> AsyncIterator[tuple[str, Gateway]]:
    """A second gateway instance, with these settings changed, over the stack's services."""
    app = create_app(dataclasses.replace(stack.settings, **changes))
    port = free_port()
    async with serving(app, port):
        yield f"http://127.0.0.1:{port}", app[GATEWAY]


@contextlib.asynccontextmanager
async def another_worker(
    stack: Stack, *, engine: Engine | None = None, **changes: Any
) -> AsyncIterator[JobRunner]:
    """One more worker, as `python -m synth_worker` runs it, over the stack's services (these settings
    changed, this engine if given); yields its job runner.

    Tests hand jobs to the runner directly, so which worker the work consumer would pick never
    matters; what it hears on its own followers (voice deletions) comes as in production.
    """
    settings = dataclasses.replace(stack.settings, **changes)
    stop, ready, runners = asyncio.Event(), asyncio.Event(), []
    worker = asyncio.create_task(
        run_worker(
            settings,
            stop,
            engine=engine,
            serve_health=False,
            ready=ready,
            started=runners.append,
            grace_s=5.0,
        )
    )
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({worker, waiting}, timeout=WORKER_START_S, return_when=asyncio.FIRST_COMPLETED)
        assert ready.is_set(), "the worker did not start"
        yield runners[0]
    finally:
        waiting.cancel()
        stop.set()
        await worker


def test_settings(nats_url: str, s3: SeaweedS3, *, gateway_port: int, emulator_url: str) -> Settings:
    return Settings(
        nats_urls=(nats_url,),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_bucket="voicerelay-test",
        wechat_api_base=emulator_url,
        gateway_port=gateway_port,
        public_base_url=f"http://127.0.0.1:{gateway_port}",
        session_secret="test-session-secret-of-32-bytes-or-more",
        rate_limit_per_minute=10_000,
        # Every test user logs in from 127.0.0.1 and uploads freely: the limits have tests of their own.
        logins_per_minute=100_000,
        uploads_per_hour=100_000,
        voices_per_user=1_000,
        streams_per_user=100,
        worker_metrics_port=free_port(),
    )


@pytest.fixture(scope="session")
async def stack(nats_server: NatsServer, s3_server: SeaweedS3) -> AsyncIterator[Stack]:
    gateway_port, emulator_port = free_port(), free_port()
    emulator_app = create_emulator_app(
        EmulatorConfig(push_url=f"http://127.0.0.1:{gateway_port}/wechat/push")
    )
    settings = test_settings(
        nats_server.url,
        s3_server,
        gateway_port=gateway_port,
        emulator_url=f"http://127.0.0.1:{emulator_port}",
    )
    stop_worker, worker_ready = asyncio.Event(), asyncio.Event()
    runners: list[JobRunner] = []
    async with contextlib.AsyncExitStack() as resources:
        await resources.enter_async_context(serving(emulator_app, emulator_port))
        gateway_app = create_app(settings)
        await resources.enter_async_context(serving(gateway_app, gateway_port))
        worker = asyncio.create_task(
            run_worker(settings, stop_worker, serve_health=False, ready=worker_ready, started=runners.append)
        )

        async def stop_worker_task() -> None:
            stop_worker.set()
            await worker

        resources.push_async_callback(stop_worker_task)
        ready = asyncio.create_task(worker_ready.wait())
        await asyncio.wait({worker, ready}, timeout=WORKER_START_S, return_when=asyncio.FIRST_COMPLETED)
        if not worker_ready.is_set():
            ready.cancel()
            raise RuntimeError("worker did not start") from worker.exception() if worker.done() else None
        bus = await EventBus.connect(settings.nats_urls, name="tests")
        resources.push_async_callback(bus.close)
        await bus.ensure_topology(
            audit_max_age_s=settings.audit_max_age_s, output_max_age_s=settings.output_max_age_s
        )
        store = ObjectStore.from_settings(settings)
        resources.callback(store.close)
        http = await resources.enter_async_context(aiohttp.ClientSession())
        yield Stack(
            settings,
            emulator_app[EMULATOR_KEY],
            bus,
            store,
            http,
            gateway=gateway_app[GATEWAY],
            worker=runners[0],
        )
