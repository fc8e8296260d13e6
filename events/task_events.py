"""Task events, built in one place so gateway and workers publish the same shapes and ids.

Event ids are derived from the task id: a retried publish dedupes on the stream (Nats-Msg-Id).
"""

from __future__ import annotations

from events.envelope import Envelope, new_event
from events.names import EventType
from events.records import ErrorInfo, TaskRecord, VoiceRecord


def requested_event(task: TaskRecord, voice: VoiceRecord) -> Envelope:
    """The job a worker runs: self-contained, so replaying it needs nothing but the stream and S3."""
    return new_event(
        EventType.SYNTHESIS_REQUESTED,
        openid=task.owner,
        trace_id=task.trace_id,
        task_id=task.task_id,
        voice_id=task.voice_id,
        event_id=f"{task.task_id}.requested",
        data={
            "text": task.text,
            "mode": task.mode,
            "instruct": task.instruct,
            "format": task.format,
            "speed": task.speed,
            "notify": task.notify,
            "sample_key": voice.sample_key,
            "prompt_text": voice.prompt_text,
            "audio_sha256": voice.audio_sha256,
        },
    )


def failed_event(task: TaskRecord, error: ErrorInfo) -> Envelope:
    return new_event(
        EventType.SYNTHESIS_FAILED,
        openid=task.owner,
        trace_id=task.trace_id,
        task_id=task.task_id,
        voice_id=task.voice_id,
        event_id=f"{task.task_id}.failed",
        data={"error": {"code": error.code, "message": error.message}},
    )


def started_event(task: TaskRecord, *, attempt: int, engine: str) -> Envelope:
    return new_event(
        EventType.SYNTHESIS_STARTED,
        openid=task.owner,
        trace_id=task.trace_id,
        task_id=task.task_id,
        voice_id=task.voice_id,
        event_id=f"{task.task_id}.started.{attempt}",
        data={"engine": engine, "attempt": attempt},
    )


def completed_event(task: TaskRecord, data: dict[str, object]) -> Envelope:
    return new_event(
        EventType.SYNTHESIS_COMPLETED,
        openid=task.owner,
        trace_id=task.trace_id,
        task_id=task.task_id,
        voice_id=task.voice_id,
        event_id=f"{task.task_id}.completed",
        data=data,
    )
