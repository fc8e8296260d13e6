"""Run the whole local stack in the foreground: NATS JetStream, SeaweedFS S3, the WeChat emulator (unless
WECHAT_API_BASE points elsewhere), the gateway and WORKERS synthesis workers (1; worker-1 … worker-N).
Only Ctrl-C or SIGTERM stops the stack: in reverse order, leaving no process behind.

`ops up` supervises what it started. The gateway or a worker that dies (a crash, OOM, `kill -9`) is
restarted with backoff (ops.services.restarts: 1, 2, 4 … s, at most 30 s, back to 1 s once it had
stayed up 60 s), one log line per restart naming the service, how it exited, the attempt, the delay
and its restart count; the rest keeps running, and JetStream redelivers the job a killed worker held.
NATS, S3 and the emulator dying is fatal instead: the stack stops and the log's tail is printed. NATS
and S3 hold the data; restarting them under a running gateway and workers would hide the real problem
(a full disk, a corrupt store, a port taken over) behind a flapping stack, and what was in flight
against them is better reported than silently retried. The emulator is stateful too (pending media
checks, issued codes), and it only exists for local runs, where a loud stop is the useful answer.

Ports: NATS_PORT (4222), NATS_MONITOR_PORT (8222), S3_PORT (8333; SeaweedFS also takes the next four
ports and each of those + 10000), EMULATOR_PORT (8090), GATEWAY_PORT (8080), WORKER_METRICS_PORT (9108;
worker-i listens on it + i - 1).
Data and logs: VOICERELAY_DATA_DIR (default var/ in the repository). Readiness limit per service:
VOICERELAY_START_TIMEOUT_S (60). The services get their configuration as environment variables
(Settings.to_env).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import sys
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from common.config import ConfigError, Settings
from common.logs import configure_logging
from ops.services.nats import NatsServer
from ops.services.ports import PortInUse, ensure_port_free
from ops.services.processes import LOCALHOST, ManagedProcess, ServiceError, python_service
from ops.services.restarts import Supervision
from ops.services.s3 import SeaweedS3
from ops.services.stack import Stack

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
READY_LINE = "VoiceRelay is up"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class UpConfig:
    """What `ops up` needs, read once from the environment."""

    data_dir: Path
    nats_port: int
    nats_monitor_port: int
    s3_port: int
    emulator_port: int
    gateway_port: int
    worker_metrics_port: int  # worker-i's is this + i - 1
    workers: int
    external_wechat_api_base: str | None  # set: use it and start no emulator
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    public_base_url: str
    session_secret: str
    start_timeout_s: float
    # The services' settings as the environment gives them; service_env moves their ports and URLs.
    settings: Settings

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UpConfig:
        env = os.environ if environ is None else environ
        defaults = Settings()

        def text(name: str, default: str) -> str:
            return env.get(name, "").strip() or default

        def port(name: str, default: int) -> int:
            raw = text(name, str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise ConfigError(f"{name} must be a port number (1–65535), got {raw!r}")
            return int(raw)

        timeout_raw = text("VOICERELAY_START_TIMEOUT_S", "60")
        try:
            start_timeout_s = float(timeout_raw)
        except ValueError:
            raise ConfigError(f"VOICERELAY_START_TIMEOUT_S must be a number, got {timeout_raw!r}") from None
        gateway_port = port("GATEWAY_PORT", defaults.gateway_port)
        workers_raw = text("WORKERS", "1")
        if not workers_raw.isdigit() or int(workers_raw) < 1:
            raise ConfigError(f"WORKERS must be a positive whole number, got {workers_raw!r}")
        workers = int(workers_raw)
        worker_metrics_port = port("WORKER_METRICS_PORT", 9108)
        if worker_metrics_port + workers - 1 > 65535:
            raise ConfigError(
                f"WORKERS={workers} workers need ports WORKER_METRICS_PORT={worker_metrics_port} and "
                f"the {workers - 1} after it, past 65535"
            )
        return cls(
            data_dir=Path(text("VOICERELAY_DATA_DIR", str(REPO_ROOT / "var"))).resolve(),
            nats_port=port("NATS_PORT", 4222),
            nats_monitor_port=port("NATS_MONITOR_PORT", 8222),
            s3_port=port("S3_PORT", 8333),
            emulator_port=port("EMULATOR_PORT", 8090),
            gateway_port=gateway_port,
            worker_metrics_port=worker_metrics_port,
            workers=workers,
            external_wechat_api_base=env.get("WECHAT_API_BASE", "").strip().rstrip("/") or None,
            s3_access_key=text("S3_ACCESS_KEY", defaults.s3_access_key),
            s3_secret_key=text("S3_SECRET_KEY", defaults.s3_secret_key),
            s3_bucket=text("S3_BUCKET", defaults.s3_bucket),
            public_base_url=text("PUBLIC_BASE_URL", f"http://{LOCALHOST}:{gateway_port}").rstrip("/"),
            # One per run unless pinned: tokens from an earlier run are then simply invalid.
            session_secret=text("SESSION_SECRET", secrets.token_urlsafe(32)),
            start_timeout_s=start_timeout_s,
            settings=Settings.from_env(env),
        )

    @property
    def start_emulator(self) -> bool:
        return self.external_wechat_api_base is None

    @property
    def wechat_api_base(self) -> str:
        return self.external_wechat_api_base or f"http://{LOCALHOST}:{self.emulator_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{LOCALHOST}:{self.gateway_port}"

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]

    def worker_port(self, name: str) -> int:
        """The metrics port of `name` ('worker-i'): WORKER_METRICS_PORT + i - 1."""
        return self.worker_metrics_port + self.worker_names().index(name)

    def worker_url(self, name: str) -> str:
        return f"http://{LOCALHOST}:{self.worker_port(name)}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def ports(self) -> list[tuple[int, str, str]]:
        """Every port the stack will listen on, as (port, what, the variable that moves it)."""
        planned = [
            (self.nats_port, "nats", "NATS_PORT"),
            (self.nats_monitor_port, "nats monitoring", "NATS_MONITOR_PORT"),
        ]
        seaweed = SeaweedS3.all_ports_for(self.s3_port)
        planned += [(port, f"SeaweedFS {role}", "S3_PORT") for role, port in seaweed.items()]
        if self.start_emulator:
            planned.append((self.emulator_port, "WeChat emulator", "EMULATOR_PORT"))
        planned += [
            (self.gateway_port, "gateway", "GATEWAY_PORT"),
        ]
        for i, name in enumerate(self.worker_names()):
            variable = "WORKER_METRICS_PORT" if i == 0 else f"WORKER_METRICS_PORT + {i}"
            planned.append((self.worker_port(name), f"{name} metrics", variable))
        return planned


def check_ports(config: UpConfig) -> None:
    """Fail before starting anything: two services on one port, or a port someone else holds."""
    owners: dict[int, tuple[str, str]] = {}
    for port, what, env_var in config.ports():
        if port in owners:
            other, other_var = owners[port]
            raise ConfigError(f"port {port} is planned for both {other} ({other_var}) and {what} ({env_var})")
        owners[port] = (what, env_var)
    for port, what, env_var in config.ports():
        ensure_port_free(port, what, env_var=env_var)


def service_env(config: UpConfig, nats: NatsServer, s3: SeaweedS3) -> dict[str, str]:
    """The environment every service of the stack gets (on top of ours): Settings.to_env."""
    settings = dataclasses.replace(
        config.settings,
        nats_urls=(nats.url or "",),
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_bucket=config.s3_bucket,
        s3_secure=False,
        wechat_api_base=config.wechat_api_base,
        gateway_port=config.gateway_port,
        public_base_url=config.public_base_url,
        session_secret=config.session_secret,
        worker_metrics_port=config.worker_metrics_port,
    )
    return {
        **os.environ,
        **settings.to_env(),
        "EMULATOR_PORT": str(config.emulator_port),
        "WECHAT_PUSH_URL": f"{config.gateway_url}/wechat/push",
        "PYTHONUNBUFFERED": "1",  # so a crash's last lines are in the log file when we print its tail
    }


async def start_all(stack: Stack, config: UpConfig) -> list[ManagedProcess]:
    """Start the services in dependency order, each ready before the next begins: the ones to restart
    when they die (the gateway and the workers)."""
    nats = NatsServer(
        config.data_dir / "nats",
        port=config.nats_port,
        monitor_port=config.nats_monitor_port,
        log_path=config.logs_dir / "nats.log",
        start_timeout_s=config.start_timeout_s,
    )
    s3 = SeaweedS3(
        config.data_dir / "s3",
        s3_port=config.s3_port,
        access_key=config.s3_access_key,
        secret_key=config.s3_secret_key,
        buckets=(config.s3_bucket,),
        log_path=config.logs_dir / "s3.log",
        start_timeout_s=config.start_timeout_s,
    )
    await stack.start(nats)
    await stack.start(s3)
    env = service_env(config, nats, s3)
    if config.start_emulator:
        await stack.start(
            python_service(
                "emulator",
                "wechat_emulator",
                env,
                config.logs_dir / "emulator.log",
                port=config.emulator_port,
                start_timeout_s=config.start_timeout_s,
            )
        )
    gateway = python_service(
        "gateway",
        "wechat_adapter",
        env,
        config.logs_dir / "gateway.log",
        port=config.gateway_port,
        health="/readyz",
        start_timeout_s=config.start_timeout_s,
    )
    await stack.start(gateway)
    restartable = [gateway]
    for name in config.worker_names():
        worker = python_service(
            name,
            "synth_worker",
            {**env, "WORKER_METRICS_PORT": str(config.worker_port(name))},
            config.logs_dir / f"{name}.log",
            port=config.worker_port(name),
            ready_line="worker ready",  # consuming, not only serving /healthz
            start_timeout_s=config.start_timeout_s,
        )
        await stack.start(worker)
        restartable.append(worker)
    return restartable


def banner(config: UpConfig) -> str:
    wechat = (
        ("WeChat emulator", config.wechat_api_base)
        if config.start_emulator
        else ("WeChat API", f"{config.wechat_api_base}  (external; no emulator started)")
    )
    rows = [
        ("gateway API", config.gateway_url),
        ("H5 demo page", f"{config.gateway_url}/demo/"),
        ("OpenAPI", f"{config.gateway_url}/openapi.json"),
        ("metrics", f"{config.gateway_url}/metrics"),
        *((f"{name} metrics", f"{config.worker_url(name)}/metrics") for name in config.worker_names()),
        wechat,
        (
            "NATS",
            f"nats://{LOCALHOST}:{config.nats_port}  (monitoring http://{LOCALHOST}:{config.nats_monitor_port})",
        ),
        ("S3", f"http://{LOCALHOST}:{config.s3_port}  (bucket {config.s3_bucket})"),
        ("logs", str(config.logs_dir)),
    ]
    lines = [
        f"{READY_LINE} — Ctrl-C stops everything; a gateway or worker that dies is restarted",
        *(f"  {name:<16} {value}" for name, value in rows),
    ]
    return "\n".join(lines)


async def _unless_stopped(coro: Coroutine[Any, Any, T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run `coro` until it finishes or `stop` is set (then cancel it): (finished, its result)."""
    work = asyncio.create_task(coro)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stopped):
            task.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)
    if work.cancelled():
        return False, None
    return True, work.result()


async def serve(config: UpConfig) -> int:
    """Start the stack, restart the gateway and workers as they die, stay up until a signal or the
    death of NATS, S3 or the emulator, then stop it all: the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Stack() as stack:
            started, restartable = await _unless_stopped(start_all(stack, config), stop)
            if not started or restartable is None:
                log.info("stop requested during start-up; stopping what has started")
                return EXIT_OK
            print(banner(config), flush=True)
            supervision = Supervision(stack, restartable)
            try:
                finished, exited = await _unless_stopped(supervision.run(), stop)
            finally:
                if restarted := {name: n for name, n in supervision.restarts.items() if n}:
                    log.info("restarts this run: %s", ", ".join(f"{k} {v}" for k, v in restarted.items()))
            if finished and exited is not None:
                log.error(
                    "%s exited unexpectedly (%s); it is not restarted (it holds the stack's state): "
                    "stopping the stack",
                    exited.name,
                    exited.describe_exit(),
                )
                print(
                    f"{exited.name} exited ({exited.describe_exit()}); last lines of {exited.log_path}:\n"
                    f"{exited.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return EXIT_FAILED
            return EXIT_OK
    except ServiceError as exc:
        print(f"ops up: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        # Kept until the stack is down, so a second Ctrl-C cannot interrupt the clean-up itself.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def configure(parser: argparse.ArgumentParser) -> None:
    """`ops up` takes no arguments: everything comes from the environment (see the module docstring)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO").upper(), process="ops")
    try:
        config = UpConfig.from_env()
        check_ports(config)
    except (ConfigError, PortInUse) as exc:
        print(f"ops up: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    log.info("data in %s, logs in %s", config.data_dir, config.logs_dir)
    return asyncio.run(serve(config))
