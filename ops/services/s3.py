"""SeaweedFS as the local S3 store: `weed mini` (master, volume, filer and S3 in one process) as a
managed child whose whole port block follows one setting, ready once a signed S3 request succeeds,
with a minio client for tests and probes and a stop that removes the unix sockets weed leaves in /tmp.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException

from common.config import Settings
from ops.services.ports import free_port_block
from ops.services.processes import _PROBE_TIMEOUT_S, LOCALHOST, ManagedProcess, find_binary


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
