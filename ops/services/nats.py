"""nats-server with JetStream as a managed child process: one server (NatsServer), or several routed
into one cluster (NatsCluster, each node joining through its ClusterMembership) for the tests that
need replicated streams and KV. Each node stores under its own data dir and is ready once its
monitoring /healthz says JetStream is up (for a cluster member: that the meta group has a leader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from ops.services.ports import free_port
from ops.services.processes import LOCALHOST, ManagedProcess, find_binary, http_probe, stop_all


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
