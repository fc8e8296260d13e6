"""How a synthesis request becomes a task: at most once per Idempotency-Key, from the result
cache when an identical request already succeeded, else as a new job under backpressure.

Plain domain code: it takes the gateway's services, the caller and the validated request, and raises
ApiError; `views/syntheses.py` parses the HTTP request and renders the task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from common.ids import is_valid_id, new_id
from common.owners import owned_key
from events.envelope import Envelope, utc_now_iso
from events.records import CachedResult, IdempotencyClaim, TaskRecord, TaskStatus, VoiceRecord, VoiceStatus
from events.state import EngineRelease, ResultTable
from events.task_events import completed_event, requested_event
from storage.keys import output_key
from storage.objects import StorageError
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.moderation import Scene, require_clean_text
from wechat_adapter.review import release_waiting_tasks

log = logging.getLogger(__name__)

OVERLOADED_RETRY_AFTER_S = 10
# A claimed key whose task has not appeared this long after the claim belongs to a request that died
# half-way (far longer than a request takes, WeChat's retries included): a repeat may take it over.
CLAIM_LEASE_S = 60.0
# How long a repeat waits for the first request under its key to make the task, and how often it looks.
CLAIM_WAIT_S = 10.0
CLAIM_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class SynthesisRequest:
    """The validated fields of a synthesis request (the view checked types, ranges and presets)."""

    text: str
    voice_id: str
    mode: str
    instruct: str | None
    format: str
    speed: float
    notify: bool

    def fields(self) -> dict[str, Any]:
        """The fields as a task record takes them."""
        return dataclasses.asdict(self)


async def submit(
    gateway: Gateway, caller: Caller, request: SynthesisRequest, *, idempotency_key: str | None = None
) -> TaskRecord:
    """The task for this request: new, a finished one from the result cache, or (with an
    Idempotency-Key) the task of the first request under that key."""
    if idempotency_key is None:
        return await _submit(gateway, caller, request.fields(), new_id("t"))
    return await _submit_once(gateway, caller, request.fields(), idempotency_key)


# --- Idempotency-Key: at most one task per user and key -------------------------------------------------


async def _submit_once(
    gateway: Gateway, caller: Caller, fields: dict[str, Any], idempotency_key: str
) -> TaskRecord:
    """The task of the first request under this key, made now if this is that request.

    The key is claimed with an atomic KV create before anything is made, so of concurrent repeats
    (on any gateway instance) exactly one submits; the others wait briefly for its task. The same
    key with another body is a conflict. A repeat is not counted by the rate limit: it asks for no work.
    """
    owner = caller.owner
    # Keys may hold any characters: the KV key carries their hash, under the owner.
    key = owned_key(owner, _hash(idempotency_key))
    fingerprint = _hash(sorted(fields.items()))
    give_up_at = time.monotonic() + CLAIM_WAIT_S
    while True:
        proposed = IdempotencyClaim(fingerprint=fingerprint, task_id=new_id("t"), claimed_at_s=time.time())
        claim, ours = await gateway.state.idempotency.create_or_get(key, proposed)
        if claim.fingerprint != fingerprint:
            raise ApiError("idempotency_conflict", detail="the key was first used with another body")
        if not ours:
            task = await gateway.state.tasks.get(owner, claim.task_id)
            if task is not None:
                return task
            ours = await _take_over_if_abandoned(gateway, key, claim)
        if ours:
            return await _submit_claimed(gateway, caller, fields, key, claim.task_id)
        if time.monotonic() >= give_up_at:
            raise ApiError("idempotency_in_progress", retry_after_s=1)
        await asyncio.sleep(CLAIM_POLL_S)


async def _take_over_if_abandoned(gateway: Gateway, key: str, claim: IdempotencyClaim) -> bool:
    """Renew a claim whose task never appeared within the lease: its request died half-way.

    The renewed claim keeps the task id, so should the old request still make its task after all,
    the two collide on the task's KV key and event id instead of making a second job.
    """
    if time.time() - claim.claimed_at_s < CLAIM_LEASE_S:
        return False
    renewed = msgspec.structs.replace(claim, claimed_at_s=time.time())
    stored = await gateway.state.idempotency.update(key, lambda held: renewed if held == claim else None)
    return stored == renewed


async def _submit_claimed(
    gateway: Gateway, caller: Caller, fields: dict[str, Any], key: str, task_id: str
) -> TaskRecord:
    """Submit under a claimed key; a failure that left no task frees the key, so a retry can succeed."""
    try:
        return await _submit(gateway, caller, fields, task_id)
    except Exception:
        if await gateway.state.tasks.get(caller.owner, task_id) is None:
            await gateway.state.idempotency.delete(key)
        raise


# --- submitting --------------------------------------------------------------------------------------------


async def _submit(gateway: Gateway, caller: Caller, fields: dict[str, Any], task_id: str) -> TaskRecord:
    """Rate limit, voice, content check; then a cached result if there is one, else a new job."""
    owner = caller.owner
    retry_after_s = await gateway.state.rate.hit(owner, gateway.settings.rate_limit_per_minute)
    if retry_after_s is not None:
        raise ApiError("rate_limited", retry_after_s=math.ceil(retry_after_s))
    voice = await _usable_voice(gateway, owner, fields["voice_id"])
    # Checked on a cache hit too: WeChat's verdict on a text (and our word list) may have changed since.
    await require_clean_text(gateway, owner=owner, text=fields["text"], scene=Scene.COMMENT)

    engine = await gateway.state.engine_in_service()
    if engine is None:  # no completion yet tells which engine release would make it: cache nothing
        task = await _create_task(gateway, caller, voice, fields, task_id)
    else:
        task = await _cached_or_new(gateway, caller, voice, fields, task_id, engine)
    gateway.metrics.tasks_submitted.labels(str(task.status)).inc()
    log.info(
        "task %s %s for %s (voice %s, trace %s)", task_id, task.status, owner, voice.voice_id, task.trace_id
    )
    return task


async def _usable_voice(gateway: Gateway, owner: str, voice_id: str) -> VoiceRecord:
    voice = await gateway.state.voices.get(owner, voice_id) if is_valid_id(voice_id, "v") else None
    if voice is None:
        raise ApiError("not_found", detail=f"voice {voice_id}")
    if voice.status == VoiceStatus.REJECTED:
        raise ApiError("voice_rejected", detail=voice_id)
    return voice


async def _create_task(
    gateway: Gateway, caller: Caller, voice: VoiceRecord, fields: dict[str, Any], task_id: str
) -> TaskRecord:
    """A new task for a worker: queued for a ready voice, else awaiting the voice's review."""
    owner = caller.owner
    # Backpressure here, after cache hits and repeats were answered: only new work is refused.
    if await gateway.queue.pending() >= gateway.settings.queue_max_pending:
        raise ApiError("overloaded", detail="job queue is full", retry_after_s=OVERLOADED_RETRY_AFTER_S)
    ready = voice.status == VoiceStatus.READY
    status = TaskStatus.QUEUED if ready else TaskStatus.AWAITING_REVIEW
    task = await _store_task(gateway, caller, fields, task_id, status)
    if ready:
        user_key = await gateway.state.user_keys.key_for(task.owner)
        await _publish_or_withdraw(gateway, task, requested_event(task, voice, user_key))
    else:
        # The verdict may have landed between our read of the voice and the task's creation, and
        # its release pass may have missed this task: look once more.
        decided = await gateway.state.voices.get(owner, voice.voice_id)
        if decided is not None and decided.status != VoiceStatus.PENDING_REVIEW:
            await release_waiting_tasks(gateway, decided)
            task = await gateway.state.tasks.get(owner, task_id) or task
    return task


async def _store_task(
    gateway: Gateway, caller: Caller, fields: dict[str, Any], task_id: str, status: TaskStatus, **result: Any
) -> TaskRecord:
    """Create the task's record (a KV create: the same task id can never be stored twice)."""
    now = utc_now_iso()
    task = TaskRecord(
        task_id=task_id,
        owner=caller.owner,
        status=status,
        trace_id=caller.trace_id,
        created_at=now,
        updated_at=now,
        **fields,
        **result,
    )
    await gateway.state.tasks.create(owned_key(task.owner, task_id), task)
    return task


async def _publish_or_withdraw(gateway: Gateway, task: TaskRecord, event: Envelope) -> None:
    """Publish the task's first event; if NATS refuses, the task never existed (the client may retry)."""
    try:
        await gateway.bus.publish(event)
    except Exception as exc:
        await gateway.state.tasks.delete(owned_key(task.owner, task.task_id))
        raise ApiError("unavailable", detail=f"publish failed: {exc}") from exc


# --- the result cache: identical requests share one synthesis ---------------------------------------------


def _hash(value: Any) -> str:
    """A stable hex digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


async def _cached_or_new(
    gateway: Gateway,
    caller: Caller,
    voice: VoiceRecord,
    fields: dict[str, Any],
    task_id: str,
    engine: EngineRelease,
) -> TaskRecord:
    """A finished task from an identical request's result, else a new job, filed as the result for
    the next identical request (consulted only once it has succeeded)."""
    results = gateway.state.results
    result_key = _result_key(voice, fields, engine)
    task = await _reuse_result(gateway, caller, result_key, engine, fields, task_id)
    if task is None:
        task = await _create_task(gateway, caller, voice, fields, task_id)
        await results.put(
            result_key, CachedResult(task_id=task_id, engine=str(engine), created_at=task.created_at)
        )
    return task


def _result_key(voice: VoiceRecord, fields: dict[str, Any], engine: EngineRelease) -> str:
    """Where a result for this request is filed: under the owner and the voice (so deleting the voice
    finds it), by a hash of everything that shapes the audio, the engine release included."""
    shaping = [voice.audio_sha256, voice.prompt_text, str(engine)]
    shaping += [fields[name] for name in ("text", "mode", "instruct", "format", "speed")]
    return ResultTable.key(voice.owner, voice.voice_id, _hash(shaping))


async def _reuse_result(
    gateway: Gateway,
    caller: Caller,
    result_key: str,
    engine: EngineRelease,
    fields: dict[str, Any],
    task_id: str,
) -> TaskRecord | None:
    """A finished task for this request made from an identical one's audio, or None (a miss).

    The audio is copied server-side under the new task's own key, so each task owns its object and
    expires on its own. No worker is involved; the stream records `tts.synthesis.completed` with
    `cached_from`, so the audit log (and the notifier) see the task finish like any other.
    """
    owner = caller.owner
    entry = await gateway.state.results.get(result_key)
    original = await gateway.state.tasks.get(owner, entry.task_id) if entry else None
    if original is None or original.status != TaskStatus.SUCCEEDED or not original.audio_key:
        return None
    audio_key = output_key(owner, task_id, fields["format"])
    try:
        await gateway.store.copy(original.audio_key, audio_key)
    except StorageError as exc:  # expired by the S3 lifecycle, or S3 trouble: synthesise afresh
        log.info("cached result %s not reusable: %s", original.task_id, exc)
        return None
    task = await _store_task(
        gateway,
        caller,
        fields,
        task_id,
        TaskStatus.SUCCEEDED,
        audio_key=audio_key,
        duration_s=original.duration_s,
        aigc_label=original.aigc_label,  # the copy carries the original's labels
    )
    data = {"cached_from": original.task_id, "audio_key": audio_key, "format": task.format}
    data |= {"duration_s": task.duration_s, "engine": engine.name, "engine_version": engine.version}
    await _publish_or_withdraw(gateway, task, completed_event(task, data))
    return task
