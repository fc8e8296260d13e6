"""Synthesis tasks: submit, list, get, fetch audio, follow status over server-sent events, and
listen to the audio as it is synthesised."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from common.owners import owned_key
from common.presets import PRESETS, PRESETS_BY_ID
from common.text import TextError, normalise_text
from events.records import TaskRecord, TaskStatus
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import (
    FORMATS,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX_CHARS,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    MODES,
    SPEED_RANGE,
)
from wechat_adapter.http.requests import caller_of, gateway_of, json_response, owner_of, read_json_object
from wechat_adapter.listening import STREAM_FORMATS, Ending, StreamEncoder, task_audio
from wechat_adapter.streams import open_stream
from wechat_adapter.submission import SynthesisRequest, submit
from wechat_adapter.views.common import load_owned, task_json
from wechat_adapter.views.media import serve_object

log = logging.getLogger(__name__)

SSE_HEARTBEAT_S = 15.0
SSE_POLL_S = 1.0  # how soon a stream notices the gateway is stopping


def parse_synthesis_request(body: dict[str, Any], *, text_max_chars: int) -> SynthesisRequest:
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
    return SynthesisRequest(
        text=text,
        voice_id=voice_id,
        mode=mode,
        instruct=instruct,
        format=audio_format,
        speed=float(speed),
        notify=notify,
    )


def _idempotency_key(request: web.Request) -> str | None:
    """The header's value: 1..255 printable ASCII characters, sent once (None when absent)."""
    values = request.headers.getall(IDEMPOTENCY_HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise ApiError("invalid_request", detail=f"{IDEMPOTENCY_HEADER} sent more than once")
    return checked_idempotency_key(values[0], IDEMPOTENCY_HEADER)


def checked_idempotency_key(value: object, name: str) -> str:
    """An idempotency key as given (header or WebSocket field `name`): 1..255 printable ASCII."""
    if not (
        isinstance(value, str)
        and 1 <= len(value) <= IDEMPOTENCY_KEY_MAX_CHARS
        and all(" " <= ch <= "~" for ch in value)
    ):
        raise ApiError(
            "invalid_request",
            detail=f"{name} must be 1..{IDEMPOTENCY_KEY_MAX_CHARS} printable ASCII characters",
        )
    return value


async def create_synthesis(request: web.Request) -> web.Response:
    """202 with a new task, or 200 with a finished one: a cache hit, or a repeat (same
    Idempotency-Key and body) of a request whose task has finished."""
    gateway = gateway_of(request)
    key = _idempotency_key(request)
    fields = parse_synthesis_request(
        await read_json_object(request), text_max_chars=gateway.settings.text_max_chars
    )
    task = await submit(gateway, caller_of(request), fields, idempotency_key=key)
    return json_response(task_json(gateway, task), status=200 if task.status.is_final else 202)


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
    """One SSE `status` event per status change, from the shared state; ends after a final status,
    when the gateway stops, or after the streams' lifetime bound (the client then reconnects)."""
    gateway, task = gateway_of(request), await load_task(request)
    async with open_stream(gateway, caller_of(request)) as stream:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        last_status: TaskStatus | None = None
        idle_s = 0.0
        try:
            async with gateway.state.tasks.watch(owned_key(task.owner, task.task_id)) as watch:
                while not (gateway.stopping.is_set() or stream.expired or _client_gone(request)):
                    await stream.keep()
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


async def synthesis_stream(request: web.Request) -> web.StreamResponse:
    """The task's audio, chunked, from its first sample (wechat_adapter/listening.py): `format=mp3`
    (frames as they are encoded) or `pcm` (s16le mono at `X-Audio-Sample-Rate`). The response starts
    with the first audio; it ends when the audio does, when the client goes, or when the gateway
    stops. `X-Task-Status` is the task's status when the stream began."""
    gateway, task = gateway_of(request), await load_task(request)
    audio_format = request.query.get("format", "mp3")
    if audio_format not in STREAM_FORMATS:
        raise ApiError("invalid_request", detail=f"format must be one of {', '.join(STREAM_FORMATS)}")
    encoder = StreamEncoder(gateway, audio_format)
    async with open_stream(gateway, caller_of(request)) as stream:
        response: web.StreamResponse | None = None
        audio = task_audio(gateway, task)
        try:
            async for piece in audio:
                if isinstance(piece, Ending) or gateway.stopping.is_set() or _client_gone(request):
                    break
                await stream.keep()
                if stream.expired:
                    break
                if piece is None:
                    continue
                if response is None:
                    response = await _start_audio(request, task, audio_format, piece.sample_rate_hz)
                await response.write(await encoder.encode(piece))
            if response is None:  # no audio at all: a failed task, or a client gone before any came
                response = await _start_audio(request, task, audio_format, None)
            await response.write(await encoder.finish())
            await response.write_eof()
        except ConnectionResetError:
            log.debug("audio stream client for %s went away", task.task_id)
        finally:
            await audio.aclose()
    return response


async def _start_audio(
    request: web.Request, task: TaskRecord, audio_format: str, sample_rate_hz: int | None
) -> web.StreamResponse:
    headers = {
        "Content-Type": "audio/mpeg" if audio_format == "mp3" else "application/octet-stream",
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",
        "X-Task-Status": str(task.status),
    }
    if sample_rate_hz is not None:
        headers["X-Audio-Sample-Rate"] = str(sample_rate_hz)
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def _client_gone(request: web.Request) -> bool:
    """Whether the client closed the connection: noticed within a poll, not at the next heartbeat,
    so its stream slot is free again at once."""
    return request.transport is None or request.transport.is_closing()


async def list_presets(request: web.Request) -> web.Response:
    return json_response({"presets": [p.to_json() for p in PRESETS]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/syntheses", create_synthesis)
    app.router.add_get("/v1/syntheses", list_syntheses)
    app.router.add_get("/v1/syntheses/{id}", get_synthesis)
    app.router.add_get("/v1/syntheses/{id}/audio", synthesis_audio, name="task_audio")
    app.router.add_get("/v1/syntheses/{id}/events", synthesis_events)
    app.router.add_get("/v1/syntheses/{id}/stream", synthesis_stream, name="task_stream")
    app.router.add_get("/v1/presets", list_presets)
