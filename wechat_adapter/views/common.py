"""What several views share: the caller's records by URL id, and their JSON representations."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from common.ids import is_valid_id
from events.records import TaskRecord, TaskStatus, VoiceRecord
from events.state import OwnedTable
from wechat_adapter.context import Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.http.requests import owner_of

R = TypeVar("R")


async def load_owned(request: web.Request, table: OwnedTable[R], prefix: str, kind: str) -> R:
    """The caller's record named by the URL's `{id}`; another user's id is as unknown as a made-up one."""
    item_id = request.match_info["id"]
    record = await table.get(owner_of(request), item_id) if is_valid_id(item_id, prefix) else None
    if record is None:
        raise ApiError("not_found", detail=f"{kind} {item_id}")
    return record


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
    # Signed like audio_url, so a player that cannot set headers may open it too.
    stream_sig = gateway.links.sign("task-stream", task.owner, task.task_id)
    body["stream_url"] = gateway.public_url(f"/v1/syntheses/{task.task_id}/stream?sig={stream_sig}")
    if task.status == TaskStatus.SUCCEEDED:
        sig = gateway.links.sign("task-audio", task.owner, task.task_id)
        body["audio_url"] = gateway.public_url(f"/v1/syntheses/{task.task_id}/audio?sig={sig}")
        body["duration_s"] = task.duration_s
    if task.aigc_label is not None:
        body["aigc_label"] = task.aigc_label
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
        "consent": voice.consent,
        # Not in the contract's minimum: lets an audio player fetch the sample for A/B listening.
        "audio_url": gateway.public_url(f"/v1/voices/{voice.voice_id}/audio?sig={sig}"),
    }
