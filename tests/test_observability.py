"""Metrics and logs an operator relies on: Prometheus names and labels on gateway and worker, and one
trace id in the JSON log lines of every process a request passes through."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import generate_latest
from stack import Stack
from test_worker_jobs import StandInMessage, queued_task

from common.logs import log_handler
from events.records import TaskStatus
from events.state import SharedState
from events.task_events import requested_event
from ops.client import eventually
from synth_worker.engines.registry import load_engine
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics


async def test_one_trace_id_from_the_request_to_the_worker_and_notifier(stack: Stack) -> None:
    captured = io.StringIO()
    handler = log_handler(captured, process="stack", json=True)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        user = await stack.user()
        voice = await stack.ready_voice(user)
        trace_id = f"tr_test{uuid.uuid4().hex[:12]}"
        reply = await user.request(
            "POST",
            "/v1/syntheses",
            json={"text": "一条追踪到底的请求", "voice_id": voice["voice_id"], "notify": True},
            headers={"X-Trace-Id": trace_id},
        )
        assert reply.status == 202, reply.body
        task = await user.wait_task(reply.body["task_id"])
        assert task["status"] == "succeeded"

        def notifier_logged() -> list[dict]:
            lines = [json.loads(line) for line in captured.getvalue().splitlines()]
            traced = [line for line in lines if line.get("trace_id") == trace_id]
            return traced if any("notification" in line["message"] for line in traced) else []

        traced = await eventually(notifier_logged)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    for line in traced:
        assert {"time", "level", "process", "logger", "message"} <= line.keys(), line
    loggers = {line["logger"] for line in traced}
    assert "wechat_adapter.submission" in loggers, loggers
    assert "synth_worker.jobs" in loggers, loggers
    assert "wechat_adapter.notifier" in loggers, loggers
    assert all(line["task_id"] == task["task_id"] for line in traced if line["logger"] == "synth_worker.jobs")


def samples(text: str, name: str) -> list[dict[str, str]]:
    """The label sets of metric `name` in Prometheus' text format."""
    found = []
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} ", text, re.MULTILINE):
        found.append(dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))))
    return found


async def test_gateway_metrics_after_a_flow(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    submitted = await user.synthesize("指标也要看得见", voice["voice_id"], notify=True)
    await user.wait_task(submitted.body["task_id"])

    async def scrape() -> str:
        reply = await stack.client().request("GET", "/metrics")
        assert reply.status == 200
        return reply.body if isinstance(reply.body, str) else reply.body.decode()

    async def notified() -> str | None:
        text = await scrape()
        return text if {"outcome": "sent"} in samples(text, "voicerelay_notifications_total") else None

    text = await eventually(notified)
    http = samples(text, "voicerelay_http_request_seconds_count")
    assert {"method": "POST", "route": "/v1/syntheses", "status": "202"} in http, http
    assert not any(voice["voice_id"] in labels["route"] for labels in http), "routes, not paths"
    wechat = samples(text, "voicerelay_wechat_requests_total")
    assert {"api": "msg_sec_check", "errcode": "0"} in wechat, wechat
    assert {"api": "jscode2session", "errcode": "0"} in wechat, wechat
    assert {"api": "subscribe_send", "errcode": "0"} in wechat, wechat
    assert re.search(r"^voicerelay_queue_pending \d+\.0$", text, re.MULTILINE), text
    assert {"status": "queued"} in samples(text, "voicerelay_tasks_submitted_total")
    for name in (
        "voicerelay_http_request_seconds",
        "voicerelay_wechat_requests_total",
        "voicerelay_queue_pending",
    ):
        assert re.search(rf"^# HELP {name} \S", text, re.MULTILINE), name


async def test_worker_metrics_after_a_job(stack: Stack) -> None:
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    task, voice = await queued_task(stack, state)
    with ThreadPoolExecutor(max_workers=1) as executor:
        engine = load_engine("espeak")
        runner = JobRunner(
            bus=stack.bus, state=state, store=stack.store, engine=engine, executor=executor, metrics=metrics
        )
        message = StandInMessage(num_delivered=1)
        await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)), message)
    assert message.calls[-1] == "ack"
    assert (await state.tasks.get(task.owner, task.task_id)).status == TaskStatus.SUCCEEDED
    text = generate_latest(metrics.registry).decode()
    assert {"engine": "espeak"} in samples(text, "voicerelay_synthesis_seconds_count")
    assert {"engine": "espeak"} in samples(text, "voicerelay_synthesis_real_time_factor_count")
    transitions = samples(text, "voicerelay_task_transitions_total")
    assert {"status": "running"} in transitions and {"status": "succeeded"} in transitions, transitions
    assert {"outcome": "succeeded"} in samples(text, "voicerelay_worker_tasks_total")
