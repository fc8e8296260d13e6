"""Async facade over the synchronous minio client: each call runs in a worker thread."""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.error import S3Error

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The object store failed or is unreachable (transient from the caller's point of view)."""


class ObjectNotFound(StorageError):
    """No object under that key."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size_bytes: int
    content_type: str


@dataclass(frozen=True, slots=True)
class ObjectChunk:
    data: bytes
    start: int
    total_bytes: int
    content_type: str


_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


class ObjectStore:
    """One bucket on one S3 endpoint."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool,
        timeout_s: float = 10,
    ) -> None:
        self.bucket = bucket
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=self._http
        )

    async def _run(self, func, *args, **kwargs):
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise ObjectNotFound(exc.code) from exc
            raise StorageError(f"s3 {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"s3 unreachable: {exc}") from exc

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (idempotent; several processes may race here)."""
        if await self._run(self._client.bucket_exists, self.bucket):
            return
        try:
            await self._run(self._client.make_bucket, self.bucket)
        except StorageError:
            if not await self._run(self._client.bucket_exists, self.bucket):
                raise
        log.info("created bucket %s", self.bucket)

    async def ping(self) -> None:
        await self._run(self._client.bucket_exists, self.bucket)

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        await self._run(
            self._client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=metadata,
        )

    async def get(self, key: str) -> bytes:
        return (await self.get_range(key)).data

    async def get_range(self, key: str, start: int = 0, length: int | None = None) -> ObjectChunk:
        """Read `length` bytes from `start` (to the end when None) with the object's total size."""

        def read() -> ObjectChunk:
            stat = self._client.stat_object(self.bucket, key)
            if start >= (stat.size or 0) and stat.size:
                return ObjectChunk(b"", start, stat.size, stat.content_type or "application/octet-stream")
            response = self._client.get_object(self.bucket, key, offset=start, length=length or 0)
            try:
                data = response.read()
            finally:
                response.close()
                response.release_conn()
            return ObjectChunk(data, start, stat.size or 0, stat.content_type or "application/octet-stream")

        return await self._run(read)

    async def stat(self, key: str) -> ObjectInfo:
        stat = await self._run(self._client.stat_object, self.bucket, key)
        return ObjectInfo(key, stat.size or 0, stat.content_type or "application/octet-stream")

    async def delete(self, key: str) -> None:
        await self._run(self._client.remove_object, self.bucket, key)

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        self._http.clear()
