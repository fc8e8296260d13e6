"""Synthesis tasks: submit, list, get, fetch audio, and follow status over server-sent events."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from aiohttp import web

from common.ids import is_valid_id, new_id
from common.presets import PRESETS, PRESETS_BY_ID
from common.text import TextError, normalise_text
from events.envelope import utc_now_iso
from events.records import TaskRecord, TaskStatus, VoiceRecord, VoiceStatus, owned_key
from events.task_events import requested_event
from wechat_adapter.context import Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.moderation import Scene, require_clean_text
from wechat_adapter.review import release_waiting_tasks
from wechat_adapter.views.common import (
    gateway_of,
    json_response,
    load_owned,
    owner_of,
    read_json_object,
    task_json,
    trace_id_of,
)
from wechat_adapter.views.media import serve_object

log = logging.getLogger(__name__)

MODES = ("zero_shot", "instruct", "cross_lingual")
FORMATS = ("mp3", "aac", "wav")
SPEED_RANGE = (0.5, 2.0)
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
SSE_HEARTBEAT_S = 15.0
SSE_POLL_S = 1.0  # how soon a stream notices the gateway is stopping


def _parse_request(body: dict[str, Any], *, text_max_chars: int) -> dict[str, Any]:
    """Validate a submission's fields; returns the normalised values or raises ApiError."""
    text, voice_id = body.get("text"), body.get("voice_id")
    if not isinstance(text, str):
        raise ApiError("text_empty" if text is None else "invalid_request", detail="text must be a string")
    try:
        text = normalise_text(text, max_chars=text_max_chars)
    except TextError as exc:
        raise ApiError(exc.code, detail=str(exc)) from None
    if not isinstance(voice_id, str) or not voice_id:
        raise ApiError("invalid_request", detail="voice_id is required")
    mode = body.get("mode", "zero_shot")
    if mode not in MODES:
        raise ApiError("invalid_request", detail=f"mode must be one of {MODES}")
    instruct = body.get("instruct")
    if mode == "instruct" and (not isinstance(instruct, str) or instruct not in PRESETS_BY_ID):
        raise ApiError("invalid_request", detail="instruct must name a preset from GET /v1/presets")
    if mode != "instruct" and instruct is not None:
        raise ApiError("invalid_request", detail="instruct is only used with mode 'instruct'")
    audio_format = body.get("format", "mp3")
    if audio_format not in FORMATS:
        raise ApiError("invalid_request", detail=f"format must be one of {FORMATS}")
    speed = body.get("speed", 1.0)
    if (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]
    ):
        raise ApiError("invalid_request", detail=f"speed must be a number in {SPEED_RANGE}")
    notify = body.get("notify", False)
    if not isinstance(notify, bool):
        raise ApiError("invalid_request", detail="notify must be true or false")
    return {
        "text": text,
        "voice_id": voice_id,
        "mode": mode,
        "instruct": instruct,
        "format": audio_format,
        "speed": float(speed),
        "notify": notify,
    }


async def create_synthesis(request: web.Request) -> web.Response:
    gateway, owner = gateway_of(request), owner_of(request)
    fields = _parse_request(await read_json_object(request), text_max_chars=gateway.settings.text_max_chars)
    retry_after_s = await gateway.state.rate.hit(owner, gateway.settings.rate_limit_per_minute)
    if retry_after_s is not None:
        raise ApiError("rate_limited", retry_after_s=math.ceil(retry_after_s))
    voice_id = fields["voice_id"]
    voice = await gateway.state.voices.get(owned_key(owner, voice_id)) if is_valid_id(voice_id, "v") else None
    if voice is None:
        raise ApiError("not_found", detail=f"voice {voice_id}")
    if voice.status == VoiceStatus.REJECTED:
        raise ApiError("voice_rejected", detail=voice_id)
    await require_clean_text(gateway, owner=owner, text=fields["text"], scene=Scene.COMMENT)

    now = utc_now_iso()
    ready = voice.status == VoiceStatus.READY
    task = TaskRecord(
        task_id=new_id("t"),
        owner=owner,
        status=TaskStatus.QUEUED if ready else TaskStatus.AWAITING_REVIEW,
        trace_id=trace_id_of(request),
        created_at=now,
        updated_at=now,
        **fields,
    )
    key = owned_key(owner, task.task_id)
    await gateway.state.tasks.create(key, task)
    if ready:
        await _publish_or_withdraw(gateway, task, voice)
    else:
        # The verdict may have landed between our read of the voice and the task's creation, and
        # its release pass may have missed this task: look once more.
        decided = await gateway.state.voices.get(owned_key(owner, voice_id))
        if decided is not None and decided.status != VoiceStatus.PENDING_REVIEW:
            await release_waiting_tasks(gateway, decided)
            task = await gateway.state.tasks.get(key) or task
    gateway.metrics.tasks_submitted.labels(str(task.status)).inc()
    log.info(
        "task %s %s for %s (voice %s, trace %s)", task.task_id, task.status, owner, voice_id, task.trace_id
    )
    return json_response(task_json(gateway, task), status=202)


async def _publish_or_withdraw(gateway: Gateway, task: TaskRecord, voice: VoiceRecord) -> None:
    """Publish the job; if NATS refuses, the task never existed (the client may simply retry)."""
    try:
        await gateway.bus.publish(requested_event(task, voice))
    except Exception as exc:
        await gateway.state.tasks.delete(owned_key(task.owner, task.task_id))
        raise ApiError("unavailable", detail=f"publish failed: {exc}") from exc


async def load_task(request: web.Request) -> TaskRecord:
    return await load_owned(request, gateway_of(request).state.tasks, "t", "task")


async def list_syntheses(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    raw_limit = request.query.get("limit", str(LIST_LIMIT_DEFAULT))
    # isascii: str.isdigit() also accepts "²", which int() refuses.
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= LIST_LIMIT_MAX:
        raise ApiError("invalid_request", detail=f"limit must be 1..{LIST_LIMIT_MAX}")
    tasks = await gateway.state.tasks.list_for(owner_of(request), int(raw_limit))
    return json_response({"tasks": [task_json(gateway, t) for t in tasks]})


async def get_synthesis(request: web.Request) -> web.Response:
    return json_response(task_json(gateway_of(request), await load_task(request)))


async def synthesis_audio(request: web.Request) -> web.StreamResponse:
    task = await load_task(request)
    if task.status != TaskStatus.SUCCEEDED or not task.audio_key:
        raise ApiError("not_found", detail=f"task {task.task_id} has no audio ({task.status})")
    return await serve_object(request, task.audio_key)


async def synthesis_events(request: web.Request) -> web.StreamResponse:
    """One SSE `status` event per status change, from the shared state; ends after a final status."""
    gateway, task = gateway_of(request), await load_task(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    last_status: TaskStatus | None = None
    idle_s = 0.0
    try:
        async with gateway.state.tasks.watch(owned_key(task.owner, task.task_id)) as watch:
            while not gateway.stopping.is_set():
                try:
                    current = await watch.next(timeout_s=SSE_POLL_S)
                except TimeoutError:
                    idle_s += SSE_POLL_S
                    if idle_s >= SSE_HEARTBEAT_S:
                        idle_s = 0.0
                        await response.write(b": keep-alive\n\n")
                    continue
                if current is None:  # deleted
                    break
                if current.status != last_status:
                    last_status = current.status
                    payload = json.dumps(task_json(gateway, current), ensure_ascii=False)
                    await response.write(f"event: status\ndata: {payload}\n\n".encode())
                if current.status.is_final:
                    break
    except ConnectionResetError:
        log.debug("sse client for %s went away", task.task_id)
    return response


async def list_presets(request: web.Request) -> web.Response:
    return json_response({"presets": [p.to_json() for p in PRESETS]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/syntheses", create_synthesis)
    app.router.add_get("/v1/syntheses", list_syntheses)
    app.router.add_get("/v1/syntheses/{id}", get_synthesis)
    app.router.add_get("/v1/syntheses/{id}/audio", synthesis_audio, name="task_audio")
    app.router.add_get("/v1/syntheses/{id}/events", synthesis_events)
    app.router.add_get("/v1/presets", list_presets)
