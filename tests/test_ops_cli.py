"""The operator commands, run as an operator would: `python -m ops demo` and `python -m ops replay`."""

from __future__ import annotations

import asyncio
import os
import re
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


async def test_replay_of_unknown_task(stack: Stack) -> None:
    code, output = await run_ops(
        "replay", "task", "t_doesnotexist", env={"NATS_URL": stack.settings.nats_urls[0]}
    )
    assert code == 1
    assert "no events for task t_doesnotexist" in output
