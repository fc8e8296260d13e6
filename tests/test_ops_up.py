"""`python -m ops up` as a user runs it: a real subprocess on free ports, stopped by a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from stack import serving

from events.bus import EventBus
from events.replay import task_timeline
from ops.client import ApiClient, eventually
from ops.samples import speech_sample
from ops.services.ports import free_port, free_port_block
from ops.services.processes import pid_alive
from ops.services.s3 import SeaweedS3
from ops.up import EXIT_CONFIG, READY_LINE, REPO_ROOT
from wechat_emulator.app import EMULATOR_KEY, EmulatorConfig, create_emulator_app

# It starts real services and processes of its own.
pytestmark = pytest.mark.stack


def _stack_env(data_dir: Path) -> dict[str, str]:
    """Our environment with every port of the stack moved to a free one and the data in `data_dir`."""
    env = {k: v for k, v in os.environ.items() if k != "WECHAT_API_BASE"}
    env.update(
        VOICERELAY_DATA_DIR=str(data_dir),
        NATS_PORT=str(free_port()),
        NATS_MONITOR_PORT=str(free_port()),
        S3_PORT=str(free_port_block(len(SeaweedS3.ROLES), offset=SeaweedS3.GRPC_OFFSET)),
        EMULATOR_PORT=str(free_port()),
        GATEWAY_PORT=str(free_port()),
        WORKER_METRICS_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env


def _descendants(pid: int) -> set[int]:
    """Every live descendant of `pid` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:  # the task ended meanwhile
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


async def _ops_up(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ops", "up",
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


async def all_gone(pids: set[int], transcript: str) -> None:
    """Every pid ends (a killed process's death is asynchronous: allow it a moment)."""
    try:
        await eventually(lambda: not [pid for pid in pids if pid_alive(pid)], timeout_s=5)
    except TimeoutError:
        pytest.fail(f"left behind: {[pid for pid in pids if pid_alive(pid)]}\n{transcript}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


async def _until_ready(
    process: asyncio.subprocess.Process, output: list[str], timeout_s: float = 120
) -> None:
    """Collect ops up's output into `output` until it prints READY_LINE."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while not any(READY_LINE in line for line in output):
        line = await asyncio.wait_for(process.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            pytest.fail("ops up ended before it was ready:\n" + "".join(output))
        output.append(line.decode())


@pytest.mark.timeout(180)
async def test_up_runs_the_stack_and_sigint_leaves_nothing_behind(data_dir: Path) -> None:
    process = await _ops_up(_stack_env(data_dir))
    output: list[str] = []
    children: set[int] = set()
    try:
        await _until_ready(process, output)
        children = _descendants(process.pid)
        assert len(children) >= 5, children  # nats, weed, emulator, gateway, worker (and their helpers)
        process.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
        output.append(rest.decode())
    finally:
        await _terminate(process, children)
    transcript = "".join(output)
    assert process.returncode == 0, transcript
    await all_gone(children, transcript)
    for name in ("nats", "s3", "emulator", "gateway", "worker-1"):
        assert (data_dir / "logs" / f"{name}.log").is_file()


@pytest.mark.timeout(180)
async def test_up_stops_everything_when_nats_dies(data_dir: Path) -> None:
    """NATS holds the data: its death is not restarted under the gateway but stops the whole stack."""
    process = await _ops_up(_stack_env(data_dir))
    output: list[str] = []
    children: set[int] = set()
    try:
        await _until_ready(process, output)
        children = _descendants(process.pid)
        [nats_pid] = _started_pids("".join(output), "nats")
        os.kill(nats_pid, signal.SIGKILL)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
        output.append(rest.decode())
    finally:
        await _terminate(process, children)
    transcript = "".join(output)
    assert process.returncode == 1, transcript
    assert "nats exited (killed by SIGKILL); last lines of" in transcript
    assert "restarting it in" not in transcript
    await all_gone(children, transcript)


def _started_pids(transcript: str, name: str) -> list[int]:
    """The pids ops up reports for `name` ("<name> started (pid N, log …)"), oldest first."""
    return [int(pid) for pid in re.findall(rf" {re.escape(name)} started \(pid (\d+),", transcript)]


async def _collect(process: asyncio.subprocess.Process, output: list[str]) -> None:
    """Append ops up's output to `output`, line by line, until it closes."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        output.append(line.decode())


async def _ready_status(http: aiohttp.ClientSession, gateway_url: str) -> int:
    async with http.get(f"{gateway_url}/readyz") as response:
        return response.status


@pytest.mark.timeout(300)
async def test_up_restarts_a_worker_killed_mid_synthesis(data_dir: Path) -> None:
    """kill -9 of the only worker mid-synthesis: ops up starts a new one (logged, counted), the gateway
    stays ready throughout, JetStream redelivers the job to the new worker, the task completes once."""
    env = _stack_env(data_dir) | {"WORKERS": "1", "ENGINE_DELAY_S": "4"}
    gateway_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    process = await _ops_up(env)
    output: list[str] = []
    children: set[int] = set()
    collector: asyncio.Task[None] | None = None
    try:
        await _until_ready(process, output)
        children = _descendants(process.pid)
        collector = asyncio.create_task(_collect(process, output))
        async with aiohttp.ClientSession() as http:
            user = ApiClient(http, gateway_url)
            assert (await user.login("restarts:1")).status == 200
            upload = await user.upload_voice(speech_sample("wav"))
            assert upload.status == 201, upload.body
            assert (await user.wait_voice(upload.body["voice_id"]))["status"] == "ready"
            submitted = await user.synthesize("进程被杀之后，新的进程会接着做完。", upload.body["voice_id"])
            assert submitted.status == 202, submitted.body
            task_id = submitted.body["task_id"]

            async def running() -> bool:
                reply = await user.request("GET", f"/v1/syntheses/{task_id}")
                return reply.body["status"] == "running"

            await eventually(running, timeout_s=30, interval_s=0.1)
            [first_pid] = _started_pids("".join(output), "worker-1")
            os.kill(first_pid, signal.SIGKILL)

            async def restarted() -> list[int]:
                assert await _ready_status(http, gateway_url) == 200  # during: the gateway stays up
                return _started_pids("".join(output), "worker-1")[1:]

            [second_pid] = await eventually(restarted, timeout_s=30, interval_s=0.2)
            assert second_pid != first_pid and pid_alive(second_pid) and not pid_alive(first_pid)
            children |= _descendants(process.pid)
            task = await user.wait_task(task_id, timeout_s=120)
            assert task["status"] == "succeeded", task
            assert await _ready_status(http, gateway_url) == 200  # after
        bus = await EventBus.connect([f"nats://127.0.0.1:{env['NATS_PORT']}"], name="test-ops-up")
        try:
            timeline = await task_timeline(bus, task_id)
        finally:
            await bus.close()  # before ops up stops NATS
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
        await asyncio.wait_for(collector, 10)
    finally:
        if collector is not None and not collector.done():
            collector.cancel()
        await _terminate(process, children)
    transcript = "".join(output)
    assert process.returncode == 0, transcript
    assert [e.type for e in timeline].count("tts.synthesis.completed") == 1, timeline
    assert [e.data["attempt"] for e in timeline if e.type == "tts.synthesis.started"] == [1, 2]
    restart_line = (
        "worker-1 exited unexpectedly (killed by SIGKILL); restarting it in 1 s "
        "(attempt 1, restart 1 of this run; log "
    )
    assert restart_line in transcript
    assert "restarts this run: worker-1 1" in transcript
    assert "gateway exited" not in transcript
    await all_gone(children, transcript)
    # Both lives in one log file, appended.
    assert (data_dir / "logs" / "worker-1.log").read_text().count("starting worker-1:") == 2


async def test_up_refuses_a_port_in_use_and_starts_nothing(data_dir: Path) -> None:
    env = _stack_env(data_dir)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env["GATEWAY_PORT"] = str(holder.getsockname()[1])
        process = await _ops_up(env)
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode()
    assert process.returncode == EXIT_CONFIG, text
    assert (
        f"port {env['GATEWAY_PORT']} (gateway) is already in use on 127.0.0.1 — "
        "stop the other process or set GATEWAY_PORT"
    ) in text
    assert not (data_dir / "logs").exists(), "nothing may start before every port is checked"


async def test_up_refuses_one_port_for_two_services(data_dir: Path) -> None:
    env = _stack_env(data_dir)
    env["WORKER_METRICS_PORT"] = env["GATEWAY_PORT"]
    process = await _ops_up(env)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == EXIT_CONFIG
    assert (
        "planned for both gateway (GATEWAY_PORT) and worker-1 metrics (WORKER_METRICS_PORT)" in out.decode()
    )


async def test_up_refuses_a_bad_worker_count(data_dir: Path) -> None:
    process = await _ops_up(_stack_env(data_dir) | {"WORKERS": "0"})
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == EXIT_CONFIG
    assert "WORKERS must be a positive whole number, got '0'" in out.decode()
    assert not (data_dir / "logs").exists()


async def _terminate(process: asyncio.subprocess.Process, children: set[int]) -> None:
    """After a failed assertion: stop ops up (which stops its children), or kill all that is left."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.communicate(), 30)
        except TimeoutError:
            process.kill()
            await process.communicate()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(180)
async def test_up_uses_an_external_wechat_api_base(data_dir: Path) -> None:
    """With WECHAT_API_BASE set, no emulator starts and the gateway talks to that base, as to real WeChat."""
    env = _stack_env(data_dir)
    gateway_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    external = create_emulator_app(EmulatorConfig(push_url=f"{gateway_url}/wechat/push"))
    external_port = free_port()
    env["WECHAT_API_BASE"] = f"http://127.0.0.1:{external_port}"
    async with serving(external, external_port), aiohttp.ClientSession() as http:
        process = await _ops_up(env)
        output: list[str] = []
        children: set[int] = set()
        try:
            await _until_ready(process, output)
            children = _descendants(process.pid)
            login = await ApiClient(http, gateway_url).login("external:1")
            process.send_signal(signal.SIGINT)
            rest, _ = await asyncio.wait_for(process.communicate(), 60)
            output.append(rest.decode())
        finally:
            await _terminate(process, children)
    transcript = "".join(output)
    assert login.status == 200, login.body
    assert [c.api for c in external[EMULATOR_KEY].calls] == ["jscode2session"]
    assert "WeChat emulator" not in transcript
    assert not (data_dir / "logs" / "emulator.log").exists()
    assert process.returncode == 0, transcript
