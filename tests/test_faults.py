"""Faults on real processes: a worker killed mid-synthesis, S3 down for 20 s, a NATS cluster node lost,
a job that runs out of deliveries, WeChat too slow. Each ends with every accepted task done exactly once.

The module runs its own NATS, S3, gateway and emulator (tests/fault_stack.py) and starts workers as
subprocesses, so they can be killed; the session `stack` is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import nats.errors
import pytest
from fault_stack import (  # noqa: F401  (fixtures)
    FaultInfra,
    FaultStack,
    fault_infra_fixture,
    fault_stack,
    faults_fixture,
    no_workers_fixture,
)
from stack import serving

from events import names
from events.bus import EventBus, consumer_spec
from events.consumer import DeadLetter, consuming
from events.records import TaskStatus
from events.replay import task_timeline
from events.state import SharedState
from ops.client import ApiClient, Reply, eventually
from ops.samples import speech_sample
from ops.services.nats import NatsCluster
from ops.services.ports import free_port
from storage.keys import output_key
from synth_worker.engines.base import DelayedEngine
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.jobs import JobRunner, retry_delay_s
from synth_worker.metrics import WorkerMetrics
from wechat_adapter.app import create_app

WORKER = consumer_spec(names.WORKER_CONSUMER)
FINAL = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED}
SENTENCE = "故障测试的一句话。"


async def submit_all(user: ApiClient, voice_id: str, texts: list[str]) -> list[str]:
    replies = await asyncio.gather(*(user.synthesize(text, voice_id) for text in texts))
    assert [r.status for r in replies] == [202] * len(texts), [r.body for r in replies if r.status != 202]
    return [r.body["task_id"] for r in replies]


async def assert_succeeded_once(
    stack: FaultStack, owner: str, task_ids: list[str], *, timeout_s: float
) -> None:
    """Every task succeeds, with one completed event and one output object each."""
    tasks = await asyncio.gather(*(stack.wait_status(owner, t, FINAL, timeout_s=timeout_s) for t in task_ids))
    assert {t.task_id: t.status for t in tasks} == dict.fromkeys(task_ids, TaskStatus.SUCCEEDED)
    for task_id in task_ids:
        # The event follows the KV state by a moment.
        types = await eventually(lambda t=task_id: _completed(stack, t), timeout_s=10)
        assert types.count("tts.synthesis.completed") == 1, (task_id, types)
        assert "tts.synthesis.failed" not in types, (task_id, types)
    keys = await stack.output_keys(owner)
    assert keys == sorted(output_key(owner, t, "mp3") for t in task_ids)


async def _completed(stack: FaultStack, task_id: str) -> list[str] | None:
    try:
        types = await stack.event_types(task_id)
    except nats.errors.Error:  # our own connection failing over (the cluster test): ask again
        return None
    return types if "tts.synthesis.completed" in types else None


# --- delivery settings ---------------------------------------------------------------------------------


def test_transient_retries_outlast_a_20_s_outage() -> None:
    """The nak schedule doubles to a cap, and the deliveries before the last one span well over 20 s."""
    delays = [retry_delay_s(n) for n in range(1, WORKER.max_deliver)]
    assert delays[:5] == [1, 2, 4, 8, 8]
    assert max(delays) == 8
    assert sum(delays) >= 45


async def test_changed_consumer_settings_update_the_durable(no_workers: FaultStack) -> None:
    """A deployment with the old worker settings (ack_wait 60 s, 5 deliveries) is updated in place."""
    js = no_workers.bus.js
    before = await js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
    old = dataclasses.replace(before.config, ack_wait=60.0, max_deliver=5)
    await js.add_consumer(names.STREAM, old)
    assert (await js.consumer_info(names.STREAM, names.WORKER_CONSUMER)).config.max_deliver == 5

    await no_workers.bus.ensure_topology(
        audit_max_age_s=no_workers.settings.audit_max_age_s,
        output_max_age_s=no_workers.settings.output_max_age_s,
    )
    after = await js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
    assert (after.config.ack_wait, after.config.max_deliver) == (WORKER.ack_wait_s, WORKER.max_deliver)
    assert after.created == before.created  # the same durable, not a new one
    assert after.delivered.stream_seq == before.delivered.stream_seq


# --- workers -------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
async def test_worker_killed_mid_synthesis(no_workers: FaultStack) -> None:
    stack = no_workers
    slow = await stack.start_worker(delay_s=3.0)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    [task_id] = await submit_all(user, voice["voice_id"], [SENTENCE])
    await stack.wait_status(user.openid, task_id, {TaskStatus.RUNNING}, timeout_s=30)

    slow.kill()
    await slow.wait_exit()
    assert slow.describe_exit() == "killed by SIGKILL"
    await stack.start_worker()

    # JetStream hands the job on once the dead worker's ack_wait runs out (no heartbeat any more).
    await assert_succeeded_once(stack, user.openid, [task_id], timeout_s=WORKER.ack_wait_s + 45)
    timeline = await task_timeline(stack.bus, task_id)
    attempts = [e.data["attempt"] for e in timeline if e.type == "tts.synthesis.started"]
    assert attempts == [1, 2]
    task = (await user.request("GET", f"/v1/syntheses/{task_id}")).body
    audio = await user.request("GET", task["audio_url"])
    assert audio.status == 200 and len(audio.body) > 1000


@pytest.mark.timeout(60)
async def test_heartbeats_keep_a_job_longer_than_ack_wait(no_workers: FaultStack) -> None:
    """A 4 s synthesis on a consumer whose ack_wait is 1.5 s stays with its worker: no redelivery to
    the idle worker beside it, one attempt, one result."""
    stack = no_workers
    js = stack.bus.js
    user = await stack.user()
    voice = await stack.ready_voice(user)
    info = await js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
    await js.add_consumer(names.STREAM, dataclasses.replace(info.config, ack_wait=1.5))
    try:
        with ThreadPoolExecutor(max_workers=1) as one, ThreadPoolExecutor(max_workers=1) as other:
            slow = DelayedEngine(EspeakEngine(), 4.0)
            common = {"bus": stack.bus, "state": SharedState(stack.bus), "store": stack.store, "engine": slow}
            runners = [
                JobRunner(**common, executor=executor, metrics=WorkerMetrics(), heartbeat_s=0.5)
                for executor in (one, other)
            ]
            async with (
                consuming(stack.bus, names.WORKER_CONSUMER, runners[0]),
                consuming(stack.bus, names.WORKER_CONSUMER, runners[1]),
            ):
                [task_id] = await submit_all(user, voice["voice_id"], [SENTENCE])
                done = await stack.wait_status(user.openid, task_id, FINAL, timeout_s=30)
    finally:
        await stack.bus.ensure_topology(
            audit_max_age_s=stack.settings.audit_max_age_s, output_max_age_s=stack.settings.output_max_age_s
        )
    assert done.status == TaskStatus.SUCCEEDED
    timeline = await task_timeline(stack.bus, task_id)
    assert [e.data["attempt"] for e in timeline if e.type == "tts.synthesis.started"] == [1]
    assert [e.type for e in timeline].count("tts.synthesis.completed") == 1


@pytest.mark.timeout(120)
async def test_a_job_out_of_deliveries_is_failed_and_dead_lettered(no_workers: FaultStack) -> None:
    """A job whose worker dies on every delivery: JetStream gives up, and a worker fails the task from
    the dead-letter stream instead of leaving it `running`."""
    stack = no_workers
    js = stack.bus.js
    user = await stack.user()
    voice = await stack.ready_voice(user)
    [task_id] = await submit_all(user, voice["voice_id"], [SENTENCE])

    # Stand in for workers that die mid-job: take the job and never answer, on a consumer shortened
    # to two deliveries of one second each so the test need not wait 10 x 15 s.
    info = await js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
    await js.add_consumer(names.STREAM, dataclasses.replace(info.config, ack_wait=1.0, max_deliver=2))
    jobs = await stack.bus.pull_subscription(names.WORKER_CONSUMER)
    try:
        for delivery in (1, 2):
            [msg] = await jobs.fetch(1, timeout=10)
            assert msg.metadata.num_delivered == delivery
            requested_seq = msg.metadata.sequence.stream

        # The advisory goes out when the consumer next looks for work after the last ack_wait.
        async def dead_lettered() -> bool:
            with contextlib.suppress(TimeoutError):
                await jobs.fetch(1, timeout=0.5)
            return (await js.stream_info(names.DEADLETTER_STREAM)).state.messages > 0

        await eventually(dead_lettered, timeout_s=20)
    finally:
        await jobs.unsubscribe()
        await stack.bus.ensure_topology(
            audit_max_age_s=stack.settings.audit_max_age_s, output_max_age_s=stack.settings.output_max_age_s
        )

    await stack.start_worker()
    failed = await stack.wait_status(user.openid, task_id, FINAL, timeout_s=30)
    assert failed.status == TaskStatus.FAILED
    assert failed.error is not None and failed.error.code == "synthesis_failed"

    async def told() -> list | None:
        events = await task_timeline(stack.bus, task_id)
        return events if "tts.synthesis.deadlettered" in [e.type for e in events] else None

    events = await eventually(told, timeout_s=10)
    types = [e.type for e in events]
    assert types.count("tts.synthesis.failed") == 1 and types.count("tts.synthesis.deadlettered") == 1
    [letter] = [e for e in events if e.type == "tts.synthesis.deadlettered"]
    requested = next(e for e in events if e.type == "tts.synthesis.requested")
    assert letter.id == f"{task_id}.deadletter"
    assert letter.data["original_event_id"] == requested.id
    assert letter.data["stream_seq"] == requested_seq
    assert letter.data["deliveries"] == 2
    # Dropped, not redelivered with the restored max_deliver: no worker ever started it.
    assert "tts.synthesis.started" not in types
    assert await stack.output_keys(user.openid) == []


@dataclass
class StandInMessage:
    """The part of a JetStream message a dead-letter handler uses, recording what it was told."""

    calls: list[str] = field(default_factory=list)

    async def ack(self) -> None:
        self.calls.append("ack")


@pytest.mark.timeout(60)
async def test_a_dead_letter_seen_twice_changes_nothing_more(no_workers: FaultStack) -> None:
    """Two workers (or one redelivery) handling one dead letter: one failure, one event of each kind,
    and the job's own late delivery afterwards does not bring the task back."""
    stack = no_workers
    user = await stack.user()
    voice = await stack.ready_voice(user)
    [task_id] = await submit_all(user, voice["voice_id"], [SENTENCE])
    requested = next(
        e for e in await task_timeline(stack.bus, task_id) if e.type == "tts.synthesis.requested"
    )
    letter = DeadLetter(
        event=requested,
        stream=names.STREAM,
        stream_seq=await stack.stream_last_seq(),
        consumer=names.WORKER_CONSUMER,
        deliveries=WORKER.max_deliver,
    )
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=SharedState(stack.bus), store=stack.store,
                           engine=EspeakEngine(), executor=executor, metrics=WorkerMetrics())  # fmt: skip
        messages = [StandInMessage(), StandInMessage()]
        await asyncio.gather(*(runner.dead_letter(letter, msg) for msg in messages))
    assert [m.calls for m in messages] == [["ack"], ["ack"]]
    failed = await stack.task(user.openid, task_id)
    assert failed is not None and failed.status == TaskStatus.FAILED

    await stack.start_worker()  # takes the original job, finds its task final, acks it

    async def drained() -> bool:
        info = await stack.bus.js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(drained, timeout_s=30)
    types = await stack.event_types(task_id)
    assert types.count("tts.synthesis.failed") == 1 and types.count("tts.synthesis.deadlettered") == 1
    assert "tts.synthesis.started" not in types
    assert (await stack.task(user.openid, task_id)).status == TaskStatus.FAILED


# --- S3 -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_s3_down_for_20_s_then_every_task_succeeds(no_workers: FaultStack) -> None:
    stack = no_workers
    await stack.start_worker(delay_s=0.2)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    before = await submit_all(user, voice["voice_id"], [f"{SENTENCE}第{i}句。" for i in range(10)])

    await stack.s3.stop()
    down_at = time.monotonic()
    try:
        # Submitting needs no S3 (samples were stored at upload): these are accepted and wait.
        during = await submit_all(user, voice["voice_id"], [f"停机时提交的第{i}句。" for i in range(5)])
        # A new voice cannot be stored: refused as unavailable (retry later), and nothing is left of it.
        upload = await user.upload_voice(speech_sample("wav"))
        assert (upload.status, upload.error_code) == (503, "unavailable"), upload.body
        assert "Retry-After" in upload.headers
        assert [v["voice_id"] for v in (await user.request("GET", "/v1/voices")).body["voices"]] == [
            voice["voice_id"]
        ]
        await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - down_at)))
    finally:
        stack.s3.start()
        await stack.s3.wait_ready()

    await assert_succeeded_once(stack, user.openid, before + during, timeout_s=90)


# --- the WeChat API ---------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_text_check_slower_than_the_client_timeout(no_workers: FaultStack) -> None:
    """msgSecCheck answering after WECHAT_TIMEOUT_S: 502 wechat_unavailable, no task, nothing published."""
    stack = no_workers
    user = await stack.user()
    voice = await stack.ready_voice(user)
    impatient = dataclasses.replace(stack.settings, wechat_timeout_s=0.5)
    port = free_port()
    stack.emulator.set_latency("msg_sec_check", 1.5)
    try:
        async with serving(create_app(impatient), port):
            client = ApiClient(stack.http, f"http://127.0.0.1:{port}", token=user.token)
            last_seq = await stack.stream_last_seq()
            reply: Reply = await client.synthesize("微信太慢了", voice["voice_id"])
            assert (reply.status, reply.error_code) == (502, "wechat_unavailable"), reply.body
            assert await stack.stream_last_seq() == last_seq
    finally:
        stack.emulator.set_latency("msg_sec_check", 0)
    assert (await user.request("GET", "/v1/syntheses")).body["tasks"] == []


# --- a three-node NATS cluster ------------------------------------------------------------------------------


@pytest.fixture
async def cluster(fault_infra: FaultInfra) -> AsyncIterator[NatsCluster]:
    """Three routed JetStream servers; the stream, consumers and KV buckets replicated on all three."""
    async with NatsCluster.on_free_ports(fault_infra.data_dir / f"cluster-{uuid.uuid4().hex[:6]}") as nodes:
        bus = await EventBus.connect(nodes.urls, name="fault-tests-bootstrap")
        try:
            # What an operator runs once per deployment (a NATS_REPLICAS setting would do it at start).
            async def replicated() -> bool:
                try:
                    await bus.ensure_topology(audit_max_age_s=3600, output_max_age_s=3600, replicas=3)
                except nats.errors.Error:  # the meta group may still be electing its leader
                    return False
                return True

            await eventually(replicated, timeout_s=30, interval_s=0.5)
        finally:
            await bus.close()
        yield nodes


@pytest.mark.timeout(240)
async def test_cluster_node_lost_under_load(fault_infra: FaultInfra, cluster: NatsCluster) -> None:
    async with fault_stack(
        cluster.urls, fault_infra.s3, fault_infra.data_dir / "cluster-logs", bucket="voicerelay-cluster"
    ) as stack:
        # The gateway's own ensure_topology (no replicas given) kept the replication.
        info = await stack.bus.js.stream_info(names.STREAM)
        assert info.config.num_replicas == 3
        for _ in range(2):
            await stack.start_worker(delay_s=0.3)
        user = await stack.user()
        voice = await stack.ready_voice(user)

        accepted: list[str] = []
        refused: list[Reply] = []

        async def load(count: int) -> None:
            """A steady stream of submissions; what is refused is retried, as the mini program does."""
            for i in range(count):
                for _ in range(30):
                    reply = await user.synthesize(f"集群测试第{i}句，节点会掉线。", voice["voice_id"])
                    if reply.status == 202:
                        accepted.append(reply.body["task_id"])
                        break
                    refused.append(reply)
                    await asyncio.sleep(0.5)
                await asyncio.sleep(0.1)

        loading = asyncio.create_task(load(30))
        try:
            await eventually(lambda: len(accepted) >= 8, timeout_s=30)
            leader = (await stack.bus.js.stream_info(names.STREAM)).cluster.leader
            victim = cluster.node(leader)
            victim.kill()  # the stream's leader: its loss forces an election under load
            await victim.wait_exit()
            await loading
        finally:
            loading.cancel()
        assert len(accepted) == 30, [r.body for r in refused]
        await assert_succeeded_once(stack, user.openid, accepted, timeout_s=120)
        # Nothing half-made: every task the user has is one of the accepted ones, and final.
        listed = (await user.request("GET", "/v1/syntheses?limit=100")).body["tasks"]
        assert sorted(t["task_id"] for t in listed) == sorted(accepted)
        info = await stack.bus.js.stream_info(names.STREAM)
        assert info.cluster.leader != leader
