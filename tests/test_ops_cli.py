"""The operator commands, run as an operator would: `python -m ops demo` and `python -m ops replay`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from stack import Stack

REPO_ROOT = Path(__file__).resolve().parent.parent


async def run_ops(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ops",
        *args,
        cwd=REPO_ROOT,
        env=os.environ | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(timeout_s):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_demo_then_replay(stack: Stack, tmp_path: Path) -> None:
    code, output = await run_ops(
        "demo",
        "--url",
        stack.url,
        "--emulator",
        stack.settings.wechat_api_base,
        "--text",
        "这是一次完整的演示。",
        "--format",
        "aac",
        "--out",
        str(tmp_path / "demo"),
    )
    assert code == 0, output
    assert (tmp_path / "demo.aac").stat().st_size > 1000
    assert "subscription message sent" in output
    task_id = re.search(r"replay task (t_\w+)", output).group(1)

    code, timeline = await run_ops("replay", "task", task_id, env={"NATS_URL": stack.settings.nats_urls[0]})
    assert code == 0, timeline
    types = [line.split()[1] for line in timeline.splitlines()]
    assert types == [
        "tts.synthesis.requested",
        "tts.synthesis.started",
        "tts.synthesis.completed",
        "tts.notify.sent",
    ]
    assert all(task_id in line for line in timeline.splitlines())
    # The completed line says where the worker's time went, compactly.
    completed = timeline.splitlines()[2]
    assert re.search(r" timings_ms=queue:[\d.]+,fetch_prompt:[\d.]+,.*,total:[\d.]+ ", completed), completed


async def test_replay_of_unknown_task(stack: Stack) -> None:
    code, output = await run_ops(
        "replay", "task", "t_doesnotexist", env={"NATS_URL": stack.settings.nats_urls[0]}
    )
    assert code == 1
    assert "no events for task t_doesnotexist" in output


def stack_env(stack: Stack) -> dict[str, str]:
    """The operator's view of the test stack, as its configuration variables."""
    settings = stack.settings
    return {
        "NATS_URL": settings.nats_urls[0], "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key, "S3_SECRET_KEY": settings.s3_secret_key,
        "S3_BUCKET": settings.s3_bucket, "WECHAT_API_BASE": settings.wechat_api_base,
        "SESSION_SECRET": settings.session_secret,
    }  # fmt: skip


async def test_replay_filters_by_time_and_type(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    task = await user.wait_task((await user.synthesize("筛选一下", voice["voice_id"])).body["task_id"])
    code, output = await run_ops("replay", "--since", "10m", "--type", "tts.synthesis.completed",
                                 env=stack_env(stack))  # fmt: skip
    assert code == 0, output
    lines = output.splitlines()
    assert any(task["task_id"] in line for line in lines)
    assert {line.split()[1] for line in lines} == {"tts.synthesis.completed"}

    code, output = await run_ops("replay", "--since", "soon", env=stack_env(stack))
    assert code == 2 and "expected a duration" in output


async def test_tail_prints_events_as_they_happen(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    tail = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops", "tail", "--type", "tts.synthesis.completed", cwd=REPO_ROOT,
        env=os.environ | stack_env(stack), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):  # tail shows only what happens after it has subscribed
            while "following events" not in (await tail.stdout.readline()).decode():
                pass
        task_id = (await user.synthesize("实时看看", voice["voice_id"])).body["task_id"]
        async with asyncio.timeout(30):
            while task_id not in (line := (await tail.stdout.readline()).decode()):
                assert line, "ops tail ended"
        assert line.split()[1] == "tts.synthesis.completed"
        tail.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await tail.wait() == 0
    finally:
        if tail.returncode is None:
            tail.kill()
            await tail.wait()


async def test_doctor_checks_everything(stack: Stack) -> None:
    code, output = await run_ops("doctor", "--json", env=stack_env(stack))
    checks = {c["name"]: c for c in json.loads(output)}
    assert {"nats", "stream", "consumer synth-worker", "s3", "s3 lifecycle", "wechat", "engine"} <= set(
        checks
    )
    assert [c for c in checks.values() if not c["ok"]] == [], output
    assert code == 0

    code, output = await run_ops("doctor", env=stack_env(stack) | {"NATS_URL": "nats://127.0.0.1:1"})
    assert code == 1
    assert "✗ nats" in output
