"""Graceful shutdown on SIGTERM, with real `python -m synth_worker` and `python -m wechat_adapter`
processes: stop taking work, finish or hand back what is in hand, close, and lose nothing on restart.

The module runs its own NATS, S3, gateway and emulator (tests/fault_stack.py); the session `stack`'s
in-process worker would otherwise take these jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest
from fault_stack import (  # noqa: F401  (fixtures)
    STOP_TIMEOUT_S,
    FaultStack,
    fault_infra_fixture,
    faults_fixture,
    gateway_process,
    no_workers_fixture,
)

from events import names
from events.records import TaskStatus
from events.replay import task_timeline
from ops.client import ApiClient, eventually
from ops.services.ports import free_port
from storage.keys import output_key
from synth_worker.worker import run_worker

FINAL = {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED}
SENTENCE = "关机之前要把这句话说完。"


async def nothing_left_for_workers(stack: FaultStack) -> None:
    """The worker consumer has no job waiting, in flight or due for redelivery."""

    async def drained() -> bool:
        info = await stack.bus.js.consumer_info(names.STREAM, names.WORKER_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(drained, timeout_s=30, interval_s=0.2)


async def event_types(stack: FaultStack, task_id: str) -> list[str]:
    return [e.type for e in await task_timeline(stack.bus, task_id)]


@pytest.mark.timeout(180)
async def test_sigterm_lets_the_worker_finish_its_job(no_workers: FaultStack) -> None:
    stack = no_workers
    worker = await stack.start_worker(delay_s=4.0)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    submitted = await user.synthesize(SENTENCE, voice["voice_id"])
    assert submitted.status == 202, submitted.body
    task_id = submitted.body["task_id"]
    await stack.wait_status(user.openid, task_id, {TaskStatus.RUNNING}, timeout_s=30)

    assert await worker.stop(STOP_TIMEOUT_S) == 0, worker.log_tail()
    log = worker.log_tail(200)
    assert "worker stopping: finishing the job in hand" in log
    assert f"task {task_id} succeeded" in log
    assert "did not finish" not in log  # finished within the grace period, not cancelled
    task = await stack.task(user.openid, task_id)
    assert task is not None and task.status == TaskStatus.SUCCEEDED

    # A worker started afterwards finds nothing lost and nothing to redo.
    await stack.start_worker()
    await nothing_left_for_workers(stack)
    types = await event_types(stack, task_id)
    assert types.count("tts.synthesis.completed") == 1, types
    assert types.count("tts.synthesis.started") == 1, types
    assert await stack.output_keys(user.openid) == [output_key(user.openid, task_id, "mp3")]


@pytest.mark.timeout(180)
async def test_a_job_past_the_grace_period_is_handed_back(no_workers: FaultStack) -> None:
    """A job longer than the shutdown grace is handed back (nak) and done once, by the next worker."""
    stack = no_workers
    slow = dataclasses.replace(stack.settings, engine_delay_s=3.0)
    stop, ready = asyncio.Event(), asyncio.Event()
    worker = asyncio.create_task(run_worker(slow, stop, serve_health=False, ready=ready, grace_s=0.5))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        user = await stack.user()
        voice = await stack.ready_voice(user)
        submitted = await user.synthesize(SENTENCE, voice["voice_id"])
        task_id = submitted.body["task_id"]
        await stack.wait_status(user.openid, task_id, {TaskStatus.RUNNING}, timeout_s=30)
    finally:
        stop.set()
        await worker
    task = await stack.task(user.openid, task_id)
    assert task is not None and task.status == TaskStatus.RUNNING  # handed back, not finished

    await stack.start_worker()
    done = await stack.wait_status(user.openid, task_id, FINAL, timeout_s=60)
    assert done.status == TaskStatus.SUCCEEDED
    await nothing_left_for_workers(stack)
    timeline = await task_timeline(stack.bus, task_id)
    assert [e.data["attempt"] for e in timeline if e.type == "tts.synthesis.started"] == [1, 2]
    assert [e.type for e in timeline].count("tts.synthesis.completed") == 1
    assert await stack.output_keys(user.openid) == [output_key(user.openid, task_id, "mp3")]


@pytest.mark.timeout(180)
async def test_sigterm_lets_the_gateway_answer_and_a_restart_loses_nothing(no_workers: FaultStack) -> None:
    stack = no_workers
    port = free_port()
    settings = dataclasses.replace(
        stack.settings, gateway_port=port, public_base_url=f"http://127.0.0.1:{port}"
    )
    gateway = stack.own(gateway_process(settings, stack.log_dir / "gateway.log"))
    gateway.start()
    await gateway.wait_ready()
    # Same SESSION_SECRET as the in-process gateway: a token from one is good on the other.
    user = await stack.user()
    voice = await stack.ready_voice(user)
    client = ApiClient(stack.http, settings.public_base_url, token=user.token)

    # A request in flight when SIGTERM arrives (WeChat's text check is slow), and an open SSE stream.
    checks_before = sum(call.api == "msg_sec_check" for call in stack.emulator.calls)
    stack.emulator.set_latency("msg_sec_check", 1.5)
    try:
        submitting = asyncio.create_task(client.synthesize(SENTENCE, voice["voice_id"]))
        await eventually(
            lambda: sum(call.api == "msg_sec_check" for call in stack.emulator.calls) > checks_before
        )
        assert await gateway.stop(STOP_TIMEOUT_S) == 0, gateway.log_tail()
        submitted = await submitting
    finally:
        stack.emulator.set_latency("msg_sec_check", 0)
    assert submitted.status == 202, submitted.body
    task_id = submitted.body["task_id"]
    with pytest.raises(aiohttp.ClientConnectionError):  # the port is closed, not half-open
        await client.request("GET", "/healthz")

    # No worker ran meanwhile: the job waits in the stream, and the restarted gateway knows the task.
    gateway.start()
    await gateway.wait_ready()
    assert (await client.request("GET", f"/v1/syntheses/{task_id}")).body["status"] == "queued"
    following = asyncio.create_task(client.follow_events(task_id, timeout_s=60))
    await stack.start_worker()
    statuses = [event["status"] for event in await following]
    assert statuses[-1] == "succeeded", statuses
    task = (await client.request("GET", f"/v1/syntheses/{task_id}")).body
    audio = await client.request("GET", task["audio_url"])
    assert audio.status == 200 and len(audio.body) > 1000
    assert (await event_types(stack, task_id)).count("tts.synthesis.completed") == 1
