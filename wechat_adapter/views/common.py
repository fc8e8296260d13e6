"""What several views share: reading JSON bodies, the caller, and resource representations."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from common.ids import is_valid_id, new_id
from common.logs import bind_trace_id
from common.owners import owned_key
from events.records import TaskRecord, TaskStatus, VoiceRecord
from events.state import KvTable
from wechat_adapter.context import GATEWAY, Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.middleware import OWNER

R = TypeVar("R")


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def owner_of(request: web.Request) -> str:
    return request[OWNER]


TRACE_ID = web.RequestKey("trace_id", str)
_TRACE_HEADER = "X-Trace-Id"
_TRACE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def trace_id_of(request: web.Request) -> str:
    """The caller's trace id if it sent a sane one, else a new one; stable for the request.

    It also tags the request's later log lines (each aiohttp request runs in its own asyncio task).
    """
    if TRACE_ID not in request:
        sent = request.headers.get(_TRACE_HEADER, "")
        request[TRACE_ID] = sent if _TRACE_RE.match(sent) else new_id("tr")
        bind_trace_id(request[TRACE_ID])
    return request[TRACE_ID]


@web.middleware
async def trace_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every log line of a request its trace id, from the first one on."""
    trace_id_of(request)
    return await handler(request)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or `invalid_json`."""
    if request.content_type != "application/json":
        raise ApiError("unsupported_media_type", detail=f"content type {request.content_type!r}")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting exhausts the parser
        raise ApiError("invalid_json", detail=str(exc) or type(exc).__name__) from None
    if not isinstance(body, dict):
        raise ApiError("invalid_json", detail="body is not a JSON object")
    return body


async def load_owned(request: web.Request, table: KvTable[R], prefix: str, kind: str) -> R:
    """The caller's record named by the URL's `{id}`; another user's id is as unknown as a made-up one."""
    item_id = request.match_info["id"]
    record = await table.get(owned_key(owner_of(request), item_id)) if is_valid_id(item_id, prefix) else None
    if record is None:
        raise ApiError("not_found", detail=f"{kind} {item_id}")
    return record


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def task_json(gateway: Gateway, task: TaskRecord) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": task.task_id,
        "status": str(task.status),
        "text": task.text,
        "voice_id": task.voice_id,
        "mode": task.mode,
        "format": task.format,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
    }
    if task.instruct:
        body["instruct"] = task.instruct
    if task.status == TaskStatus.SUCCEEDED:
        sig = gateway.links.sign("task-audio", task.owner, task.task_id)
        body["audio_url"] = gateway.public_url(f"/v1/syntheses/{task.task_id}/audio?sig={sig}")
        body["duration_s"] = task.duration_s
    if task.error is not None:
        body["error"] = {"code": task.error.code, "message": task.error.message}
    return body


def voice_json(gateway: Gateway, voice: VoiceRecord) -> dict[str, Any]:
    sig = gateway.links.sign("voice-audio", voice.owner, voice.voice_id)
    return {
        "voice_id": voice.voice_id,
        "name": voice.name,
        "status": str(voice.status),
        "duration_s": voice.duration_s,
        "prompt_text": voice.prompt_text,
        "created_at": voice.created_at,
        # Not in the contract's minimum: lets an audio player fetch the sample for A/B listening.
        "audio_url": gateway.public_url(f"/v1/voices/{voice.voice_id}/audio?sig={sig}"),
    }
