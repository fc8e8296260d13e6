"""Async facade over the synchronous minio client: each call runs in a worker thread."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, CopySource, Filter
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from common.config import Settings

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
# Lifecycle rules this store manages carry this id prefix; an operator's other rules are left alone.
_RULE_ID_PREFIX = "voicerelay-expire-"
# Objects one delete_prefix call removes at most, so a request never runs an unbounded listing.
DELETE_PREFIX_MAX_OBJECTS = 10_000


class ObjectStore:
    """One bucket on one S3 endpoint."""

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 10) -> ObjectStore:
        """The store the S3_* settings describe."""
        return cls(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
            secure=settings.s3_secure, timeout_s=timeout_s,
        )  # fmt: skip

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

    async def copy(self, source_key: str, key: str) -> None:
        """Server-side copy (no bytes pass through us); content type and metadata come along."""
        await self._run(self._client.copy_object, self.bucket, key, CopySource(self.bucket, source_key))

    async def delete_prefix(self, prefix: str, *, max_objects: int = DELETE_PREFIX_MAX_OBJECTS) -> int:
        """Delete every object under `prefix`; returns how many there were.

        Raises StorageError, after deleting `max_objects`, if the prefix holds more: calling again
        finishes the job, and no single call holds a thread for an unbounded listing.
        """
        if not prefix.endswith("/"):
            raise ValueError("a prefix must end with '/' so it cannot match a sibling's keys")

        def delete() -> int:
            listing = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            keys = [obj.object_name for obj in itertools.islice(listing, max_objects + 1)]
            errors = list(
                self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys[:max_objects]))
            )
            if errors:
                raise StorageError(f"s3 could not delete {len(errors)} objects under {prefix}: {errors[0]}")
            if len(keys) > max_objects:
                raise StorageError(f"more than {max_objects} objects under {prefix}; deleted {max_objects}")
            return len(keys)

        return await self._run(delete)

    async def expiry_rules(self) -> dict[str, int]:
        """The bucket's lifecycle expirations this store manages: key prefix -> days."""
        return _expirations(await self._run(self._client.get_bucket_lifecycle, self.bucket))

    async def ensure_lifecycle(self, rules: Mapping[str, int]) -> None:
        """Make S3 expire objects under each prefix after so many days (idempotent; rules of other
        ids on the bucket are kept). S3 does the expiring, so no process of ours has to run for it."""

        def apply() -> bool:
            current = self._client.get_bucket_lifecycle(self.bucket)
            if _expirations(current) == dict(rules):
                return False
            kept = [rule for rule in (current.rules if current else []) if not _is_managed(rule)]
            managed = [
                Rule(
                    ENABLED,
                    rule_filter=Filter(prefix=prefix),
                    rule_id=_RULE_ID_PREFIX + prefix.strip("/"),
                    expiration=Expiration(days=days),
                )
                for prefix, days in sorted(rules.items())
            ]
            self._client.set_bucket_lifecycle(self.bucket, LifecycleConfig(kept + managed))
            return True

        if await self._run(apply):
            log.info(
                "bucket %s expires %s", self.bucket, ", ".join(f"{p} after {d} d" for p, d in rules.items())
            )

    async def exists(self, key: str) -> bool:
        try:
            await self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        self._http.clear()


def _is_managed(rule: Rule) -> bool:
    return (rule.rule_id or "").startswith(_RULE_ID_PREFIX) and rule.rule_filter is not None


def _expirations(config: LifecycleConfig | None) -> dict[str, int]:
    """Prefix -> days of the managed rules in a bucket's lifecycle configuration."""
    return {
        rule.rule_filter.prefix: rule.expiration.days
        for rule in (config.rules if config else [])
        if _is_managed(rule) and rule.expiration is not None and rule.expiration.days is not None
    }
