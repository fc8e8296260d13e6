"""Typed tables over JetStream KV with compare-and-set updates; shared by every instance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Generic, NamedTuple, TypeVar

import msgspec
import nats.errors
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue, StopIterSentinel

from common.ids import new_id
from common.owners import is_valid_owner, owned_key
from events import names
from events.bus import KV_BUCKETS, EventBus
from events.envelope import MalformedEvent, decode_envelope, utc_now_iso
from events.records import (
    CachedResult,
    ErrorInfo,
    IdempotencyClaim,
    MediaCheckRecord,
    SessionRecord,
    StreamLease,
    TaskRecord,
    TaskStatus,
    VoiceRecord,
)
from events.sealing import UserKeys

log = logging.getLogger(__name__)

# A purged key answers KeyDeletedError, which is not a KeyNotFoundError: both mean "absent".
_ABSENT = (KeyNotFoundError, KeyDeletedError)

R = TypeVar("R", bound=msgspec.Struct)

_CAS_ATTEMPTS = 20


class ConcurrentUpdateError(RuntimeError):
    """A record kept changing under a compare-and-set loop."""


class KvTable(Generic[R]):
    """Records of one type in one KV bucket."""

    def __init__(self, bus: EventBus, bucket: str, record_type: type[R]) -> None:
        self._kv = bus.kv(bucket)
        self._js = bus.js
        self._bucket = bucket
        self._type = record_type
        self._decoder = msgspec.json.Decoder(record_type)

    async def get(self, key: str) -> R | None:
        found = await self._get(key)
        return found[0] if found else None

    async def _get(self, key: str) -> tuple[R, int] | None:
        try:
            entry = await self._kv.get(key)
        except _ABSENT:
            return None
        if entry.value is None or entry.operation in {"DEL", "PURGE"}:
            return None
        return self._decoder.decode(entry.value), entry.revision

    async def create(self, key: str, record: R) -> None:
        await self._kv.create(key, msgspec.json.encode(record))

    async def put(self, key: str, record: R) -> None:
        await self._kv.put(key, msgspec.json.encode(record))

    async def create_or_get(self, key: str, record: R) -> tuple[R, bool]:
        """Store `record` unless the key holds one: (the record holding the key, whether it is ours).

        One atomic create decides between racing callers, whichever instance they run on.
        """
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self.create(key, record)
            except (KeyWrongLastSequenceError, *_ABSENT):
                found = await self._get(key)
                if found is None:
                    continue  # deleted between the create and the get: try again
                return found[0], False
            return record, True
        raise ConcurrentUpdateError(key)

    async def update(self, key: str, mutate: Callable[[R], R | None]) -> R | None:
        """Apply `mutate` atomically; it returns the new record, or None to leave it as it is.

        Returns the record as stored afterwards, or None if the key does not exist.
        """
        for _ in range(_CAS_ATTEMPTS):
            found = await self._get(key)
            if found is None:
                return None
            current, revision = found
            changed = mutate(msgspec.structs.replace(current))
            if changed is None:
                return current
            try:
                await self._kv.update(key, msgspec.json.encode(changed), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return changed
        raise ConcurrentUpdateError(key)

    async def delete(self, key: str) -> None:
        await self._kv.purge(key)

    async def delete_matching(self, pattern: str) -> None:
        """Purge every key matching a subject pattern such as `owner.voice_id.*`."""
        await asyncio.gather(*map(self.delete, await self.keys(pattern)))

    async def keys(self, pattern: str) -> list[str]:
        """Keys matching a subject pattern such as `owner.*`, from the stream's own subject index.

        Not nats-py's `keys()` (it reads the whole bucket and matches substrings) nor a watch (its
        initial-values marker can arrive early, nats-io/nats.py#842, so listings came back short).
        Deleted keys may be listed; `get` answers None for them.
        """
        info = await self._js.stream_info(
            f"KV_{self._bucket}", subjects_filter=f"$KV.{self._bucket}.{pattern}"
        )
        prefix = f"$KV.{self._bucket}."
        return [subject.removeprefix(prefix) for subject in (info.state.subjects or {})]

    @contextlib.asynccontextmanager
    async def watch(self, key: str) -> AsyncIterator[RecordWatch[R]]:
        """Follow one key: its current record first, then every change."""
        watcher = await self._kv.watch(key, include_history=False)
        try:
            yield RecordWatch(watcher, self._decoder)
        finally:
            await watcher.stop()


class RecordWatch(Generic[R]):
    """Successive states of one watched key."""

    def __init__(self, watcher: KeyValue.KeyWatcher, decoder: msgspec.json.Decoder) -> None:
        self._watcher = watcher
        self._decoder = decoder

    async def next(self, timeout_s: float) -> R | None:
        """The next state (None once deleted); raises TimeoutError when nothing changed in time."""
        while True:
            try:
                entry = await self._watcher.updates(timeout=timeout_s)
            except nats.errors.TimeoutError:
                raise TimeoutError from None
            if entry is None:  # the "initial values delivered" marker: nothing to report
                continue
            if isinstance(entry, StopIterSentinel):
                return None
            if entry.value is None or entry.operation in {"DEL", "PURGE"}:
                return None
            return self._decoder.decode(entry.value)


class OwnedTable(KvTable[R]):
    """Records filed under their owner (`<owner>.<id>`), read by owner and id: a lookup can only ever
    reach the owner's own records."""

    async def get(self, owner: str, item_id: str) -> R | None:  # type: ignore[override]
        return await super().get(owned_key(owner, item_id))

    async def list_for(self, owner: str, limit: int | None = None) -> list[R]:
        """The owner's newest records first (ids sort by creation time)."""
        keys = sorted(await self.keys(f"{owner}.*"), reverse=True)[:limit]
        found = await asyncio.gather(*map(self._get, keys))
        return [record for record, _ in filter(None, found)]

    async def count_for(self, owner: str) -> int:
        """How many records the owner has (deleted keys stay listed until their markers age out)."""
        return len(await self.list_for(owner))


class TaskTable(OwnedTable[TaskRecord]):
    async def transition(
        self,
        owner: str,
        task_id: str,
        status: TaskStatus,
        *,
        allowed_from: frozenset[TaskStatus] | None = None,
        **changes: object,
    ) -> TaskRecord | None:
        """Move a task to `status` unless it is already final (or not in `allowed_from`).

        Returns the stored record (changed or not), None when the task does not exist.
        """

        def mutate(task: TaskRecord) -> TaskRecord | None:
            if task.status.is_final and task.status != status:
                return None
            if allowed_from is not None and task.status not in allowed_from:
                return None
            return msgspec.structs.replace(task, status=status, updated_at=utc_now_iso(), **changes)

        return await self.update(owned_key(owner, task_id), mutate)

    async def fail(self, owner: str, task_id: str, error: ErrorInfo) -> TaskRecord | None:
        return await self.transition(owner, task_id, TaskStatus.FAILED, error=error)


class VoiceTable(OwnedTable[VoiceRecord]):
    pass


class StreamTable(OwnedTable[StreamLease]):
    """Leases on the long-lived responses each user holds open, shared by every gateway instance.

    A lease is a key with the bucket's TTL, renewed while its stream is open, deleted when it closes:
    a gateway that dies mid-stream frees its leases by expiry.
    """

    async def open(self, owner: str, limit: int) -> str | None:
        """A new lease for `owner`, or None when `limit` are already open."""
        if await self.count_for(owner) >= limit:
            return None
        lease_id = new_id("s")
        now = utc_now_iso()
        await self.create(owned_key(owner, lease_id), StreamLease(opened_at=now, renewed_at=now))
        if await self.count_for(owner) > limit:  # parallel opens at the edge: the late ones back out
            await self.close(owner, lease_id)
            return None
        return lease_id

    async def renew(self, owner: str, lease_id: str) -> None:
        await self.update(
            owned_key(owner, lease_id), lambda lease: msgspec.structs.replace(lease, renewed_at=utc_now_iso())
        )

    async def close(self, owner: str, lease_id: str) -> None:
        await self.delete(owned_key(owner, lease_id))


class ResultTable(KvTable[CachedResult]):
    """Finished work that identical requests may reuse, filed under the voice it was spoken with."""

    @staticmethod
    def key(owner: str, voice_id: str, request_hash: str) -> str:
        return f"{owned_key(owner, voice_id)}.{request_hash}"

    async def forget_voice(self, owner: str, voice_id: str) -> None:
        """Drop every entry of the voice: its audio must not be handed out once the voice is gone."""
        await self.delete_matching(f"{owned_key(owner, voice_id)}.*")


class RateLimiter:
    """Requests per key (an owner, a hashed client address) per fixed window, counted in KV so every
    gateway instance shares them.

    Each allowed request stores its own key (`<kind>.<who>.<window>.<random>`) and the count is the
    number of such keys, read from the stream's subject index: no compare-and-set, so one user's
    parallel requests cannot contend (a shared counter made them exhaust their retries). A request
    already over the limit is refused before anything is written, so a flood of refused requests
    costs one read each and stores nothing; concurrent requests at the edge may overshoot by at most
    their number, and are refused after the fact. The bucket's TTL removes old windows.
    """

    def __init__(self, bus: EventBus, bucket: str, *, kind: str, window_s: int) -> None:
        if not window_s * 2 <= (KV_BUCKETS[bucket] or 0):
            raise ValueError(f"{bucket} keeps entries too briefly for a {window_s} s window")
        self._kv = bus.kv(bucket)
        self._js = bus.js
        self._bucket = bucket
        self._kind = kind
        self.window_s = window_s

    async def hit(self, who: str, limit: int, *, now_s: float | None = None) -> float | None:
        """Count one request of `who`; None if allowed, else the seconds until the window resets."""
        now_s = time.time() if now_s is None else now_s
        window_start = int(now_s // self.window_s) * self.window_s
        retry_after_s = max(window_start + self.window_s - now_s, 1.0)
        window = f"{self._kind}.{owned_key(who, str(window_start))}"
        if await self._count(window) >= limit:
            return retry_after_s
        await self._kv.create(f"{window}.{uuid.uuid4().hex}", b"")
        return None if await self._count(window) <= limit else retry_after_s

    async def _count(self, window: str) -> int:
        info = await self._js.stream_info(
            f"KV_{self._bucket}", subjects_filter=f"$KV.{self._bucket}.{window}.*"
        )
        return len(info.state.subjects or {})


class OnceKeys:
    """Keys that can be claimed once while the bucket keeps them: the first claim wins on every instance.

    One atomic create decides between racing claimers; the bucket's TTL forgets a key when it no
    longer needs remembering. Connection trouble raises (the caller decides to fail closed).
    """

    def __init__(self, bus: EventBus, bucket: str) -> None:
        self._kv = bus.kv(bucket)

    async def claim(self, key: str) -> bool:
        """True for the first claim of `key` (within the bucket's TTL), False for every later one."""
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self._kv.create(key, b"")
            except KeyWrongLastSequenceError:
                return False
            except _ABSENT:
                continue  # it expired or was released between the create and its check: try again
            return True
        raise ConcurrentUpdateError(key)

    async def release(self, key: str) -> None:
        """Forget a claim, so that the same key can be claimed again (its work failed)."""
        await self._kv.purge(key)


class SessionRevocations:
    """Revoked bearer sessions, shared by every gateway instance.

    `<owner>.<session id>` marks one revoked session; `<owner>` holds a time (ms since the epoch): every
    session of the owner issued until then is revoked. Entries live as long as the bucket's TTL, which
    is longer than any token lives, so a revocation is never forgotten while its token is still valid.
    """

    def __init__(self, bus: EventBus, bucket: str) -> None:
        self._kv = bus.kv(bucket)

    async def revoke_session(self, owner: str, session_id: str) -> None:
        await self._kv.put(owned_key(owner, session_id), b"")

    async def is_session_revoked(self, owner: str, session_id: str) -> bool:
        try:
            entry = await self._kv.get(owned_key(owner, session_id))
        except _ABSENT:
            return False
        return entry.operation not in {"DEL", "PURGE"}

    async def revoke_all(self, owner: str, *, issued_until_ms: int) -> None:
        """Revoke every session of `owner` issued until `issued_until_ms` (a later time stored stays)."""
        for _ in range(_CAS_ATTEMPTS):
            current, revision = await self._revoked_until(owner)
            if current >= issued_until_ms:
                return
            try:
                if revision is None:
                    await self._kv.create(owner, str(issued_until_ms).encode())
                else:
                    await self._kv.update(owner, str(issued_until_ms).encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return
        raise ConcurrentUpdateError(owner)

    async def revoked_until_ms(self, owner: str) -> int:
        """Sessions of `owner` issued until this time (ms) are revoked; 0 when none is."""
        return (await self._revoked_until(owner))[0]

    async def _revoked_until(self, owner: str) -> tuple[int, int | None]:
        if not is_valid_owner(owner):
            raise ValueError("owner is not a valid openid")
        try:
            entry = await self._kv.get(owner)
        except _ABSENT:
            return 0, None
        if entry.value is None or entry.operation in {"DEL", "PURGE"}:
            return 0, entry.revision
        try:
            return int(entry.value), entry.revision
        except ValueError:
            return 0, entry.revision


class EngineRelease(NamedTuple):
    """Which engine made a result: a result of one release is not a result of another."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


class SharedState:
    """Every KV table, built once from a connected bus whose topology is ensured."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._js = bus.js
        self.tasks = TaskTable(bus, names.TASKS_BUCKET, TaskRecord)
        self.voices = VoiceTable(bus, names.VOICES_BUCKET, VoiceRecord)
        self.media_checks = KvTable(bus, names.MEDIA_CHECKS_BUCKET, MediaCheckRecord)
        self.sessions = KvTable(bus, names.SESSIONS_BUCKET, SessionRecord)
        # Synthesis requests and voice uploads per user; logins per client address and per code.
        self.rate = RateLimiter(bus, names.RATE_BUCKET, kind="synthesis", window_s=60)
        self.upload_rate = RateLimiter(bus, names.RATE_BUCKET, kind="upload", window_s=3600)
        self.login_rate_by_address = RateLimiter(bus, names.RATE_BUCKET, kind="login-address", window_s=60)
        self.login_rate_by_code = RateLimiter(bus, names.RATE_BUCKET, kind="login-code", window_s=60)
        self.idempotency = KvTable(bus, names.IDEMPOTENCY_BUCKET, IdempotencyClaim)
        self.results = ResultTable(bus, names.RESULTS_BUCKET, CachedResult)
        self.streams = StreamTable(bus, names.STREAMS_BUCKET, StreamLease)
        self.push_nonces = OnceKeys(bus, names.PUSH_NONCES_BUCKET)
        self.revoked_sessions = SessionRevocations(bus, names.REVOKED_SESSIONS_BUCKET)
        self.user_keys = UserKeys(bus, names.USER_KEYS_BUCKET)

    async def forget_owner(self, owner: str) -> None:
        """Erasure: remove every entry filed under `owner` (tasks, voices, cached results, idempotency
        claims, rate-limit windows, stream leases, the session record, logout marks), with history and
        markers. Kept: the revoke-all time (`SessionRevocations.revoke_all`, key `<owner>`), which must
        outlive the user's tokens and expires with them, and the sealing key (`user_keys.destroy`).
        Media-check records are filed by WeChat's trace id: the caller removes its voices' ones."""
        if not is_valid_owner(owner):
            raise ValueError("owner is not a valid openid")
        owned = f"{owner}.*"
        patterns = (
            (names.TASKS_BUCKET, owned),
            (names.VOICES_BUCKET, owned),
            (names.RESULTS_BUCKET, f"{owner}.>"),
            (names.IDEMPOTENCY_BUCKET, owned),
            (names.RATE_BUCKET, f"*.{owner}.>"),  # `<kind>.<owner>.<window>.<random>`
            (names.STREAMS_BUCKET, owned),
            (names.SESSIONS_BUCKET, owner),
            (names.REVOKED_SESSIONS_BUCKET, owned),  # single sessions: the revoke-all time covers them
        )
        await asyncio.gather(*(self._bus.purge_kv(bucket, pattern) for bucket, pattern in patterns))

    async def engine_in_service(self) -> EngineRelease | None:
        """The engine of the newest `tts.synthesis.completed` on the stream; None before any.

        Gateways cannot ask the workers which engine they run, but every completion says which one
        made it: the newest one is what the fleet runs now (one stream read, no extra state).
        """
        try:
            message = await self._js.get_last_msg(names.STREAM, names.EventType.SYNTHESIS_COMPLETED)
        except NotFoundError:
            return None
        try:
            data = decode_envelope(message.data or b"").data
        except MalformedEvent:
            return None
        name, version = data.get("engine"), data.get("engine_version")
        if not (isinstance(name, str) and isinstance(version, str)):
            return None
        return EngineRelease(name, version)
