"""Stacks for fault and shutdown tests: their own NATS (one server or a three-node cluster) and S3 on
fresh data dirs, an in-process gateway and WeChat emulator, and synthesis workers as real subprocesses
(`python -m synth_worker`) that a test may SIGTERM or SIGKILL.

Nothing here touches the session `stack`: its in-process worker would take these tests' jobs.
A test module takes the fixtures by importing their functions, `from fault_stack import faults_fixture`
and so on (named apart from the fixtures, so test parameters do not shadow the imports).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats.errors
import pytest
from stack import Stack, serving, test_settings

from common.config import Settings
from events.bus import EventBus
from events.records import TaskRecord, TaskStatus
from events.replay import task_timeline
from events.state import SharedState
from ops.client import eventually
from ops.services.nats import NatsServer
from ops.services.ports import free_port
from ops.services.processes import LOCALHOST, ManagedProcess, python_service, stop_all
from ops.services.s3 import SeaweedS3
from storage.keys import OUTPUTS_PREFIX
from storage.objects import ObjectStore
from wechat_adapter.app import create_app
from wechat_emulator.app import EMULATOR_KEY, EmulatorConfig, create_emulator_app

# SIGTERM to exit: the worker's shutdown grace (30 s) plus closing; past this a test has failed anyway.
STOP_TIMEOUT_S = 45.0


def service_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment (Settings.to_env) that makes `python -m <service>` run with `settings`."""
    return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", **overrides}


def worker_process(settings: Settings, log_path: Path, *, delay_s: float = 0.0) -> ManagedProcess:
    """A `python -m synth_worker` child on its own metrics port; ready once it consumes."""
    port = free_port()
    env = service_env(dataclasses.replace(settings, worker_metrics_port=port, engine_delay_s=delay_s))
    return python_service("worker", "synth_worker", env, log_path, port=port, ready_line="worker ready")


def gateway_process(settings: Settings, log_path: Path) -> ManagedProcess:
    """A `python -m wechat_adapter` child serving `settings.gateway_port`."""
    env = service_env(settings)
    return python_service(
        "gateway", "wechat_adapter", env, log_path, port=settings.gateway_port, ready_line="listening on"
    )


@dataclass
class FaultStack(Stack):
    """The session Stack's helpers, plus worker processes this stack owns and stops."""

    s3: SeaweedS3 = field(kw_only=True)
    log_dir: Path = field(kw_only=True)
    processes: list[ManagedProcess] = field(default_factory=list)

    def own(self, process: ManagedProcess) -> ManagedProcess:
        """Have this stack stop `process` at teardown (it may be started and stopped meanwhile)."""
        self.processes.append(process)
        return process

    async def start_worker(self, *, delay_s: float = 0.0) -> ManagedProcess:
        """Start one more worker subprocess and wait until it consumes."""
        n = len(self.processes) + 1
        process = self.own(worker_process(self.settings, self.log_dir / f"worker{n}.log", delay_s=delay_s))
        process.start()
        await process.wait_ready()
        return process

    async def stop_processes(self) -> None:
        """SIGTERM every owned process (killed if it ignores that); leaves none running."""
        processes, self.processes = self.processes, []
        await stop_all(processes, STOP_TIMEOUT_S)

    async def task(self, owner: str, task_id: str) -> TaskRecord | None:
        return await SharedState(self.bus).tasks.get(owner, task_id)

    async def wait_status(
        self, owner: str, task_id: str, statuses: set[TaskStatus], *, timeout_s: float
    ) -> TaskRecord:
        async def reached() -> TaskRecord | None:
            try:
                task = await self.task(owner, task_id)
            except nats.errors.Error:  # our own connection failing over (cluster tests): ask again
                return None
            return task if task is not None and task.status in statuses else None

        return await eventually(reached, timeout_s=timeout_s, interval_s=0.1)

    async def event_types(self, task_id: str) -> list[str]:
        return [e.type for e in await task_timeline(self.bus, task_id)]

    async def output_keys(self, owner: str) -> list[str]:
        """Every object under the owner's outputs prefix, straight from S3."""

        def listing() -> list[str]:
            objects = self.s3.client().list_objects(
                self.settings.s3_bucket, prefix=f"{OUTPUTS_PREFIX}{owner}/", recursive=True
            )
            return sorted(o.object_name for o in objects if o.object_name)

        return await asyncio.to_thread(listing)


@contextlib.asynccontextmanager
async def fault_stack(
    nats_urls: Sequence[str], s3: SeaweedS3, log_dir: Path, *, bucket: str, **changes: object
) -> AsyncIterator[FaultStack]:
    """Emulator and gateway in this process, over the given NATS and S3; workers added by the test."""
    gateway_port, emulator_port = free_port(), free_port()
    settings = test_settings(
        nats_urls[0], s3, gateway_port=gateway_port, emulator_url=f"http://{LOCALHOST}:{emulator_port}"
    )
    settings = dataclasses.replace(settings, nats_urls=tuple(nats_urls), s3_bucket=bucket, **changes)
    emulator_app = create_emulator_app(
        EmulatorConfig(push_url=f"http://{LOCALHOST}:{gateway_port}/wechat/push")
    )
    async with contextlib.AsyncExitStack() as resources:
        await resources.enter_async_context(serving(emulator_app, emulator_port))
        await resources.enter_async_context(serving(create_app(settings), gateway_port))
        bus = await EventBus.connect(settings.nats_urls, name="fault-tests")
        resources.push_async_callback(bus.close)
        await bus.ensure_topology(
            audit_max_age_s=settings.audit_max_age_s, output_max_age_s=settings.output_max_age_s
        )
        store = ObjectStore.from_settings(settings)
        resources.callback(store.close)
        http = await resources.enter_async_context(aiohttp.ClientSession())
        stack = FaultStack(settings, emulator_app[EMULATOR_KEY], bus, store, http, s3=s3, log_dir=log_dir)
        # Registered last, so run first: workers drain against NATS and S3 while both are still up.
        resources.push_async_callback(stack.stop_processes)
        yield stack


@dataclass
class FaultInfra:
    nats: NatsServer
    s3: SeaweedS3
    data_dir: Path


@pytest.fixture(scope="module", name="fault_infra")
async def fault_infra_fixture(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FaultInfra]:
    """NATS and S3 of this module's own, on free ports and fresh data dirs."""
    data_dir = tmp_path_factory.mktemp("faults")
    async with (
        NatsServer.on_free_ports(data_dir / "nats") as nats,
        SeaweedS3.on_free_ports(data_dir / "s3") as s3,
    ):
        yield FaultInfra(nats, s3, data_dir)


@pytest.fixture(scope="module", name="faults")
async def faults_fixture(fault_infra: FaultInfra) -> AsyncIterator[FaultStack]:
    """A gateway and emulator over this module's NATS and S3; each test starts the workers it needs."""
    assert fault_infra.nats.url is not None
    async with fault_stack(
        [fault_infra.nats.url], fault_infra.s3, fault_infra.data_dir / "logs", bucket="voicerelay-faults"
    ) as stack:
        yield stack


@pytest.fixture(name="no_workers")
async def no_workers_fixture(faults: FaultStack) -> AsyncIterator[FaultStack]:
    """The module's stack with no worker running before and after the test (each test brings its own)."""
    await faults.stop_processes()
    try:
        yield faults
    finally:
        await faults.stop_processes()
