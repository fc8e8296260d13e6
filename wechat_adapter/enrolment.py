"""Voice enrolment: a checked sample becomes a voice under review, all or nothing; and erasure.

A voice exists only with its stored sample, its KV record, its WeChat media check and its
`tts.voice.uploaded` event: if any step fails, what was made is removed again. Plain domain code: it
takes the gateway's services, the caller and the upload, raises ApiError, and never sees a request
(`views/voices.py` reads the upload and renders the voice).
"""

from __future__ import annotations

import asyncio
import logging
import math

import msgspec

from common.ids import new_id
from common.owners import owned_key
from common.text import TextError, normalise_text
from events.envelope import new_event, utc_now_iso
from events.names import EventType
from events.records import MediaCheckRecord, VoiceRecord, VoiceStatus
from storage.keys import features_prefix, sample_key
from storage.objects import StorageError
from wechat_adapter.backpressure import SlotsFull
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import CONSENTS, DEFAULT_NAME, NAME_MAX_CHARS
from wechat_adapter.intake import Upload, analyse_sample
from wechat_adapter.moderation import Scene, require_clean_text
from wechat_adapter.task_recovery import fail_tasks_of_deleted_voice
from wechat_adapter.wechat.api import WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)

# When every decode slot is busy: a decode takes well under a second, so a client may come back soon.
DECODE_RETRY_AFTER_S = 2


async def enrol_voice(gateway: Gateway, caller: Caller, upload: Upload) -> VoiceRecord:
    """Check the fields, the audio (on the audio executor) and the text, then store the voice and
    start WeChat's review of the sample. Returns the voice, `pending_review`."""
    owner = caller.owner
    settings = gateway.settings
    prompt_text = _clean_field(upload.prompt_text, max_chars=settings.text_max_chars, field="prompt_text")
    name = _clean_field(upload.name or DEFAULT_NAME, max_chars=NAME_MAX_CHARS, field="name")
    consent = _require_consent(upload.consent)
    # Cheapest refusals first: each upload past here costs a decode, a msgSecCheck and a mediaCheckAsync
    # (a per-appid daily quota: spent by one user, it fails everyone's uploads).
    await _require_room_for_a_voice(gateway, owner)
    retry_after_s = await gateway.state.upload_rate.hit(owner, settings.uploads_per_hour)
    if retry_after_s is not None:
        raise ApiError("rate_limited", detail="uploads per hour", retry_after_s=math.ceil(retry_after_s))
    try:
        with gateway.decode_slots.take():
            loop = asyncio.get_running_loop()
            sample = await loop.run_in_executor(gateway.audio_executor, analyse_sample, upload.audio)
    except SlotsFull as exc:
        raise ApiError("overloaded", detail=str(exc), retry_after_s=DECODE_RETRY_AFTER_S) from None
    await require_clean_text(gateway, owner=owner, text=f"{name}\n{prompt_text}", scene=Scene.PROFILE)

    voice_id = new_id("v")
    consent_at = utc_now_iso()
    voice = VoiceRecord(
        voice_id=voice_id,
        owner=owner,
        name=name,
        status=VoiceStatus.PENDING_REVIEW,
        duration_s=sample.duration_s,
        prompt_text=prompt_text,
        created_at=consent_at,
        sample_key=sample_key(owner, voice_id),
        audio_sha256=sample.sha256,
        consent=consent,
        consent_at=consent_at,
    )
    key = owned_key(owner, voice_id)
    try:
        await gateway.store.put(voice.sample_key, sample.wav, "audio/wav")
        await gateway.state.voices.create(key, voice)
        # Checked again now that the voice is stored: of parallel uploads at the limit, those that
        # made the count pass it are undone (by the handler below) before WeChat is asked anything.
        await _require_room_for_a_voice(gateway, owner, including_new=True)
        trace_id = await _start_media_check(gateway, voice)
        # Compare-and-set, not put: WeChat's verdict may already have been applied to this voice.
        voice = await gateway.state.voices.update(
            key, lambda current: msgspec.structs.replace(current, media_trace_id=trace_id)
        ) or msgspec.structs.replace(voice, media_trace_id=trace_id)
        await gateway.bus.publish(
            new_event(
                EventType.VOICE_UPLOADED,
                openid=owner,
                trace_id=caller.trace_id,
                voice_id=voice.voice_id,
                data={
                    "duration_s": voice.duration_s,
                    "audio_sha256": voice.audio_sha256,
                    "media_trace_id": voice.media_trace_id,
                    "consent": voice.consent,
                    "consent_at": voice.consent_at,
                },
            )
        )
    except Exception as exc:
        # Nothing half-stored: a voice exists only with its sample, its review and its event.
        try:
            await _erase_objects(gateway, voice)
        except StorageError as erase_exc:  # S3 may be what failed; the lifecycle rule expires what is left
            log.warning("could not delete the objects of voice %s: %s", voice.voice_id, erase_exc)
        await _erase_records(gateway, voice)
        if isinstance(exc, StorageError):
            raise ApiError("unavailable", detail=f"storing the sample: {exc}") from exc
        raise
    log.info(
        "voice %s uploaded by %s (%.1f s)",
        voice.voice_id,
        owner,
        voice.duration_s,
    )
    log.debug("voice %s: media check %s", voice.voice_id, voice.media_trace_id)  # trace ids: debug only
    return voice


async def delete_voice(gateway: Gateway, caller: Caller, voice: VoiceRecord) -> None:
    """Erase the voice: sample, cached features, cached results, records; then fail the tasks that
    were waiting for it. Objects go first, so a failed delete leaves the voice in place to be deleted
    again; finished tasks keep their own audio (already delivered), which the S3 lifecycle expires.
    Should failing the waiting tasks itself fail, the stale-task sweeper fails them later (their
    voice is gone either way)."""
    try:
        await _erase_objects(gateway, voice)
    except StorageError as exc:
        raise ApiError("unavailable", detail=f"deleting voice {voice.voice_id}: {exc}") from exc
    await _erase_records(gateway, voice)
    await gateway.bus.publish(
        new_event(
            EventType.VOICE_DELETED,
            openid=voice.owner,
            trace_id=caller.trace_id,
            voice_id=voice.voice_id,
        )
    )
    log.info("voice %s deleted by %s", voice.voice_id, voice.owner)
    # Once more now that the record is gone: a job that stored features between the first sweep and
    # the record's deletion saw the voice alive; from here on every job sees it gone and cleans up.
    try:
        await gateway.store.delete_prefix(features_prefix(voice.owner, voice.voice_id))
    except StorageError as exc:  # the workers' own check and the lifecycle rule remain
        log.warning("second sweep of voice %s's features failed: %s", voice.voice_id, exc)
    await fail_tasks_of_deleted_voice(gateway, voice.owner, voice.voice_id)


async def _require_room_for_a_voice(gateway: Gateway, owner: str, *, including_new: bool = False) -> None:
    count = await gateway.state.voices.count_for(owner)
    if count - (1 if including_new else 0) >= gateway.settings.voices_per_user:
        raise ApiError(
            "voice_limit_reached", detail=f"{count} voices, at most {gateway.settings.voices_per_user}"
        )


def _require_consent(value: str) -> str:
    """The speaker's consent (《深度合成管理规定》第十四条): one of `fields.CONSENTS`, required."""
    if not value:
        raise ApiError("consent_required", detail="consent is missing")
    if value not in CONSENTS:
        raise ApiError("invalid_request", detail=f"consent must be one of {', '.join(CONSENTS)}")
    return value


def _clean_field(value: str, *, max_chars: int, field: str) -> str:
    try:
        return normalise_text(value, max_chars=max_chars)
    except TextError as exc:
        raise ApiError(
            "invalid_request" if exc.code == "text_empty" else exc.code, detail=f"{field}: {exc}"
        ) from None


async def _start_media_check(gateway: Gateway, voice: VoiceRecord) -> str:
    """Ask WeChat to review the sample; it fetches a signed, expiring gateway URL (no S3 credentials)."""
    link = gateway.links.sign("media", voice.owner, voice.voice_id)
    try:
        trace_id = await gateway.wechat.media_check_async(
            openid=voice.owner,
            media_url=gateway.public_url(f"/wechat/media/{link}"),
            scene=int(Scene.PROFILE),
        )
    except (WeChatError, WeChatUnavailable) as exc:
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    await gateway.state.media_checks.put(
        trace_id,
        MediaCheckRecord(
            trace_id=trace_id, owner=voice.owner, voice_id=voice.voice_id, created_at=utc_now_iso()
        ),
    )
    return trace_id


async def _erase_objects(gateway: Gateway, voice: VoiceRecord) -> None:
    """The sample and every feature an engine cached from it; raises StorageError."""
    await gateway.store.delete(voice.sample_key)
    await gateway.store.delete_prefix(features_prefix(voice.owner, voice.voice_id))


async def _erase_records(gateway: Gateway, voice: VoiceRecord) -> None:
    """Results made with the voice first (they must not be handed out again), then the voice itself."""
    await gateway.state.results.forget_voice(voice.owner, voice.voice_id)
    await gateway.state.voices.delete(owned_key(voice.owner, voice.voice_id))
    if voice.media_trace_id:
        await gateway.state.media_checks.delete(voice.media_trace_id)
