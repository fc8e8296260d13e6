"""Task events, built in one place so gateway and workers publish the same shapes and ids.

Event ids derive from the task id: a retried publish dedupes on the stream (Nats-Msg-Id).
"""

from __future__ import annotations

from typing import Any

from events.envelope import Envelope, new_event
from events.names import EventType
from events.records import ErrorInfo, TaskRecord, VoiceRecord
from events.sealing import seal_fields


def task_event(task: TaskRecord, event_type: EventType, suffix: str, data: dict[str, Any]) -> Envelope:
    """An event about `task`, with the id `<task_id>.<suffix>` (`.r<N>` after its N-th redrive)."""
    if task.redrives:
        suffix = f"{suffix}.r{task.redrives}"
    return new_event(
        event_type,
        openid=task.owner,
        trace_id=task.trace_id,
        task_id=task.task_id,
        voice_id=task.voice_id,
        event_id=f"{task.task_id}.{suffix}",
        data=data,
    )


def requested_event(task: TaskRecord, voice: VoiceRecord, user_key: bytes) -> Envelope:
    """The job a worker runs: self-contained, so replaying it needs nothing but the stream, S3 and the
    owner's key (`UserKeys.key_for`), which seals the text and the voice's transcript."""
    return task_event(task, EventType.SYNTHESIS_REQUESTED, "requested", seal_fields({
        "text": task.text, "mode": task.mode, "instruct": task.instruct, "format": task.format,
        "speed": task.speed, "notify": task.notify, "sample_key": voice.sample_key,
        "prompt_text": voice.prompt_text, "audio_sha256": voice.audio_sha256,
    }, user_key, task.owner))  # fmt: skip


def started_event(task: TaskRecord, *, attempt: int, engine: str) -> Envelope:
    return task_event(
        task, EventType.SYNTHESIS_STARTED, f"started.{attempt}", {"engine": engine, "attempt": attempt}
    )


def completed_event(task: TaskRecord, data: dict[str, Any]) -> Envelope:
    return task_event(task, EventType.SYNTHESIS_COMPLETED, "completed", data)


def failed_event(task: TaskRecord, error: ErrorInfo) -> Envelope:
    return task_event(
        task, EventType.SYNTHESIS_FAILED, "failed", {"error": {"code": error.code, "message": error.message}}
    )


def notify_event(task: TaskRecord, *, sent: bool, data: dict[str, Any]) -> Envelope:
    return task_event(task, EventType.NOTIFY_SENT if sent else EventType.NOTIFY_FAILED, "notify", data)
