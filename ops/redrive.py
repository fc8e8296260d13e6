"""Running failed tasks again from their original request (`python -m ops replay --redrive`).

Idempotent by compare-and-set: only the redrive that moves a task from `failed` to `queued` records a
`tts.synthesis.redriven` event and publishes the request again, under a new Nats-Msg-Id (the original
one would be deduplicated by the stream). A task that is not failed (any more) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from common.owners import owned_key
from events.bus import EventBus
from events.envelope import Envelope, utc_now_iso
from events.names import EventType
from events.records import TaskRecord, TaskStatus
from events.replay import read_events, task_timeline
from events.state import SharedState
from events.task_events import task_event

REDRIVEN_BY = "ops"


def redrive_number(events: Iterable[Envelope]) -> int:
    """1 for a task's first redrive, 2 for its second, …: from the redriven events it already has."""
    return 1 + sum(event.type == EventType.SYNTHESIS_REDRIVEN for event in events)


def _original_request(events: Iterable[Envelope]) -> Envelope | None:
    return next((e for e in events if e.type == EventType.SYNTHESIS_REQUESTED), None)


async def _requeue(state: SharedState, request: Envelope) -> TaskRecord | None:
    """failed -> queued by compare-and-set; the queued record, or None if the task was not failed."""
    moved = False

    def mutate(task: TaskRecord) -> TaskRecord | None:
        nonlocal moved  # update() may call this again after losing a race: the last call decides
        moved = task.status == TaskStatus.FAILED
        if not moved:
            return None
        return msgspec.structs.replace(
            task,
            status=TaskStatus.QUEUED,
            error=None,
            audio_key=None,
            duration_s=None,
            updated_at=utc_now_iso(),
            redrives=task.redrives + 1,
        )

    stored = await state.tasks.update(owned_key(request.openid, request.task_id or ""), mutate)
    return stored if moved else None


async def redrive(
    bus: EventBus, state: SharedState, task_id: str, events: list[Envelope], *, dry_run: bool
) -> str:
    """Redrive one task given its events from the stream; one line saying what was done."""
    request = _original_request(events)
    if request is None:
        return f"{task_id}  skipped: no {EventType.SYNTHESIS_REQUESTED} in the stream"
    task = await state.tasks.get(request.openid, task_id)
    if task is None:
        return f"{task_id}  skipped: the task is gone"
    if task.status != TaskStatus.FAILED:
        return f"{task_id}  nothing to do: the task is {task.status}"
    number = redrive_number(events)
    reason = task.error.code if task.error else "unknown"
    if dry_run:
        return f"{task_id}  would redrive (#{number}, failed with {reason})"
    queued = await _requeue(state, request)
    if queued is None:
        return f"{task_id}  nothing to do: the task changed meanwhile"
    data = {"redrive": number, "by": REDRIVEN_BY, "previous_error": reason, "original_event_id": request.id}
    await bus.publish(task_event(queued, EventType.SYNTHESIS_REDRIVEN, f"redriven.{number}", data))
    await bus.publish(
        msgspec.structs.replace(request, id=f"{request.id}.redrive{number}", time=utc_now_iso())
    )
    return f"{task_id}  redriven (#{number}, failed with {reason}); trace={request.trace_id}"


async def redrive_tasks(
    bus: EventBus, state: SharedState, task_ids: Iterable[str], *, dry_run: bool
) -> list[str]:
    """Named tasks: one line each, whatever their state."""
    return [
        await redrive(bus, state, task_id, await task_timeline(bus, task_id), dry_run=dry_run)
        for task_id in task_ids
    ]


async def redrive_failed(
    bus: EventBus, state: SharedState, *, since_s: float | None, dry_run: bool
) -> list[str]:
    """Every failed task whose request is in the stream since `since_s`: one line each."""
    by_task: dict[str, list[Envelope]] = {}
    async for event in read_events(bus, since_s=since_s, subjects="tts.synthesis.>"):
        if event.task_id:
            by_task.setdefault(event.task_id, []).append(event)
    lines = []
    for task_id, events in by_task.items():
        request = _original_request(events)
        if request is None:
            continue  # requested before the window: not this run's business
        task = await state.tasks.get(request.openid, task_id)
        if task is not None and task.status == TaskStatus.FAILED:
            lines.append(await redrive(bus, state, task_id, events, dry_run=dry_run))
    return lines or ["no failed task to redrive"]
