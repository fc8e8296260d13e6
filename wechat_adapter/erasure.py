"""The right to erasure (`DELETE /v1/me`): everything of a user goes, and the audit log forgets their words.

The steps, in this order:
1. Every token of the user is revoked, so nothing new arrives from them (other gateway instances
   follow within `revocations.cache_s`).
2. A sweep: the KV records filed under the user (tasks, voices, cached results, idempotency claims,
   rate-limit windows, stream leases, the session record; `SharedState.forget_owner`) and their
   voices' media-check records go first, then the audio chunks their tasks' streams still hold
   (events/audio.py), then every object under the user's S3 prefixes (samples, features, outputs).
   Records before objects: a worker that stores a task's audio after the objects went finds the task
   gone and deletes that audio and its chunks itself (synth_worker/jobs.py).
3. Once `revocations.cache_s` has passed since step 1, the sweep once more: a request that another
   instance let through just before the revocation reached it may have stored something meanwhile.
4. The user's sealing key is destroyed (events/sealing.py): the texts and transcripts in every event
   of theirs still in the stream read `[erased]` from now on.
5. `tts.voice.deleted` for each voice, so every worker forgets the profiles and engine speakers it
   holds in memory, then `tts.user.erased` with what was removed.

Every step can be run again: an erasure that fails half-way answers 503, and the user logs in again
(a new token is not revoked) and repeats it. What stays: the revoke-all time (`<openid>` and a
timestamp, expiring with the last token it refuses) and the events' timeline (types, times, ids and
the openid, with no words in clear).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

import nats.errors

from events.audio import purge_audio
from events.envelope import new_event
from events.names import EventType
from events.records import VoiceRecord
from storage.keys import owner_prefixes
from storage.objects import StorageError
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erasure removed: voices and tasks (KV records), and objects in S3."""

    voices: int
    tasks: int
    objects: int


async def erase_user(gateway: Gateway, caller: Caller) -> Erasure:
    """Erase everything of the caller (module docstring); raises ApiError("unavailable") when NATS or
    S3 fail part-way, after which running it again finishes the job."""
    owner = caller.owner
    loop = asyncio.get_running_loop()
    try:
        await gateway.revocations.revoke_all(owner)
        revoked_at_s = loop.time()
        voices, tasks, objects = await _sweep(gateway, owner)
        await asyncio.sleep(max(0.0, gateway.revocations.cache_s - (loop.time() - revoked_at_s)))
        late_voices, late_tasks, late_objects = await _sweep(gateway, owner)
        await gateway.state.user_keys.destroy(owner)
        voice_ids = sorted({voice.voice_id for voice in (*voices, *late_voices)})
        erasure = Erasure(len(voice_ids), tasks + late_tasks, objects + late_objects)
        for voice_id in voice_ids:
            await gateway.bus.publish(
                new_event(EventType.VOICE_DELETED, openid=owner, trace_id=caller.trace_id, voice_id=voice_id)
            )
        await gateway.bus.publish(
            new_event(
                EventType.USER_ERASED,
                openid=owner,
                trace_id=caller.trace_id,
                data={"voices": erasure.voices, "tasks": erasure.tasks, "objects": erasure.objects},
            )
        )
    except (nats.errors.Error, TimeoutError, StorageError) as exc:
        raise ApiError("unavailable", detail=f"erasing {owner}: {exc!r}") from exc
    log.info("user %s erased: %d voices, %d tasks, %d objects", owner, *dataclasses.astuple(erasure))
    return erasure


async def _sweep(gateway: Gateway, owner: str) -> tuple[list[VoiceRecord], int, int]:
    """The owner's KV records, then their objects: (the voices found, tasks found, objects deleted)."""
    state = gateway.state
    voices, task_keys = await asyncio.gather(state.voices.list_for(owner), state.tasks.keys(f"{owner}.*"))
    await asyncio.gather(
        *(state.media_checks.delete(voice.media_trace_id) for voice in voices if voice.media_trace_id)
    )
    await state.forget_owner(owner)
    await purge_audio(gateway.bus.js, owner)  # what streams of their tasks still hold (events/audio.py)
    deleted = await asyncio.gather(*map(gateway.store.delete_prefix, owner_prefixes(owner)))
    return voices, len(task_keys), sum(deleted)
