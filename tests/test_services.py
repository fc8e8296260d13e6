"""The local service processes: they start, answer, stop without leftovers, and fail loudly."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from ops.client import eventually
from ops.services.nats import NatsServer
from ops.services.ports import PortInUse, ensure_port_free, free_port
from ops.services.processes import ManagedProcess, ServiceError, find_binary, pid_alive
from ops.services.restarts import RestartPolicy, Supervision
from ops.services.s3 import SeaweedS3
from ops.services.stack import Stack

# It starts real services and processes of its own.
pytestmark = pytest.mark.stack


def _python(name: str, code: str, tmp_path: Path, **kwargs: object) -> ManagedProcess:
    log_path = tmp_path / f"{name}.log"
    return ManagedProcess(name, [sys.executable, "-c", code], log_path=log_path, **kwargs)  # type: ignore[arg-type]


async def test_nats_jetstream_answers(nats_server: NatsServer) -> None:
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().account_info()
    finally:
        await nc.close()
    assert info.limits is not None


async def test_s3_put_and_get(s3_server: SeaweedS3) -> None:
    assert s3_server.endpoint == f"127.0.0.1:{s3_server.s3_port}"
    client = s3_server.client()

    def round_trip() -> bytes:
        if not client.bucket_exists("services-test"):
            client.make_bucket("services-test")
        client.put_object("services-test", "hello.txt", io.BytesIO(b"hello"), 5, content_type="text/plain")
        response = client.get_object("services-test", "hello.txt")
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    assert await asyncio.to_thread(round_trip) == b"hello"


@pytest.mark.parametrize("factory", [NatsServer.on_free_ports, SeaweedS3.on_free_ports], ids=["nats", "s3"])
async def test_stop_leaves_no_process_and_restart_after_kill(
    factory: Callable[[Path], ManagedProcess], tmp_path: Path
) -> None:
    server = factory(tmp_path)
    async with server:
        crashed_pid = server.pid
        assert crashed_pid is not None
        server.kill()
        await asyncio.wait_for(server.wait_exit(), 5)
        server.start()  # a restart after a crash, on the same ports and data
        await server.wait_ready()
        pid = server.pid
        assert pid is not None and pid != crashed_pid and pid_alive(pid)
    assert server.returncode is not None
    assert not pid_alive(pid)
    assert not pid_alive(crashed_pid)


async def test_stop_kills_what_ignores_sigterm_and_sweeps_the_group(tmp_path: Path) -> None:
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    process = _python("stubborn", stubborn, tmp_path)
    process.start()
    await process.wait_ready(lambda: _log_has_number(process), timeout_s=10)
    grandchild_pid = int(process.log_tail(1))
    assert await process.stop(timeout_s=0.5) == -9
    assert not pid_alive(process.pid or 0)
    # SIGKILL reached the whole group; the grandchild's death is asynchronous, so wait for it.
    await eventually(lambda: not pid_alive(grandchild_pid), timeout_s=5)


async def _log_has_number(process: ManagedProcess) -> bool:
    return process.log_tail(1).strip().isdigit()


def test_ensure_port_free_names_the_service_and_the_setting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUse) as caught:
            ensure_port_free(port, "nats", env_var="NATS_PORT")
    assert str(caught.value) == (
        f"port {port} (nats) is already in use on 127.0.0.1 — stop the other process or set NATS_PORT"
    )
    ensure_port_free(port, "nats")  # free again once the holder is closed


async def test_exit_before_ready_reports_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = NatsServer(tmp_path, port=holder.getsockname()[1], monitor_port=free_port())
        failure = r"(?s)nats exited \(exit code 1\) before it was ready.*in use"
        with pytest.raises(ServiceError, match=failure):
            async with server:
                pass
    assert server.pid is not None and not pid_alive(server.pid)


async def _never() -> bool:
    return False


async def test_not_ready_in_time_is_an_error_with_the_log(tmp_path: Path) -> None:
    process = _python("silent", "print('booting', flush=True); import time; time.sleep(60)", tmp_path)
    async with process:  # no probe given: running counts as ready
        with pytest.raises(ServiceError, match=r"(?s)silent was not ready within 0 s.*booting"):
            await process.wait_ready(_never, timeout_s=0.3)
    assert not pid_alive(process.pid or 0)


def test_find_binary_explains_a_missing_package() -> None:
    assert find_binary("nats-server").endswith("nats-server")
    with pytest.raises(ServiceError, match="not found"):
        find_binary("voicerelay-no-such-binary")


async def test_stack_stops_in_reverse_and_reports_the_first_exit(tmp_path: Path) -> None:
    sleeper = "import time; time.sleep(60)"
    async with Stack(stop_timeout_s=5) as stack:
        first = _python("first", sleeper, tmp_path)
        second = _python("second", "import time; time.sleep(0.3)", tmp_path)
        await stack.start(first)
        await stack.start(second)
        assert await asyncio.wait_for(stack.wait_for_exit(), 10) is second
        assert first.running
    assert stack.processes == ()
    assert not pid_alive(first.pid or 0) and not pid_alive(second.pid or 0)


async def test_stack_failing_start_stops_what_started(tmp_path: Path) -> None:
    stack = Stack()
    first = _python("first", "import time; time.sleep(60)", tmp_path)
    broken = _python("broken", "raise SystemExit('no config')", tmp_path, probe=_never)
    with pytest.raises(ServiceError, match=r"(?s)broken exited \(exit code 1\).*no config"):
        async with stack:
            await stack.start(first)
            await stack.start(broken)
    assert not pid_alive(first.pid or 0)


async def test_supervision_restarts_its_children_and_returns_the_first_other_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A supervised child that keeps dying is restarted with backoff into the same log; another child's
    exit ends the supervision, and the stack still stops everything."""
    fast = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, stable_after_s=60)
    async with Stack(stop_timeout_s=5) as stack:
        crashy = _python(
            "crashy",
            "import time; print('alive', flush=True); time.sleep(0.2); raise SystemExit(3)",
            tmp_path,
        )
        steady = _python("steady", "import time; time.sleep(60)", tmp_path)
        fatal = _python("fatal", "import time; time.sleep(2.5)", tmp_path)
        for process in (steady, fatal, crashy):
            await stack.start(process)
        supervision = Supervision(stack, [crashy, steady], fast)
        caplog.set_level("INFO", logger="ops.services")
        assert await asyncio.wait_for(supervision.run(), 20) is fatal
        restarts = supervision.restarts
        assert restarts["crashy"] >= 3 and restarts["steady"] == 0, restarts
        assert steady.running
    assert not any(pid_alive(p.pid or 0) for p in (crashy, steady, fatal))
    lines = [r.getMessage() for r in caplog.records if r.name == "ops.services.restarts"]
    assert lines[:3] == [
        f"crashy exited unexpectedly (exit code 3); restarting it in {delay} s "
        f"(attempt {n}, restart {n} of this run; log {crashy.log_path})"
        for n, delay in ((1, 0.05), (2, 0.1), (3, 0.2))
    ]
    # Every life in the one log, appended: its start marker and (but perhaps the last) its output. A
    # restart is counted when it is scheduled, so the last one may have been cut short by `fatal`'s
    # exit during its backoff wait, before it started.
    log_lines = crashy.log_path.read_text().splitlines()
    lives = sum(line.startswith("=== ") for line in log_lines)
    assert lives in (restarts["crashy"], restarts["crashy"] + 1), (lives, restarts)
    assert log_lines.count("alive") >= lives - 1
