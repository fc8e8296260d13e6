"""No task left behind: tasks whose voice went away are failed, and queued tasks whose job was lost
are queued again.

Two ways a task could wait forever, each closed here:
- its voice is deleted while the task waits (queued or awaiting review): `fail_tasks_of_deleted_voice`
  fails them at once with `voice_deleted` (and `tts.synthesis.failed`, so SSE streams end and the
  notifier sends the notice the user asked for);
- its job never reached the stream (the gateway died between storing the task and publishing it, or
  a release pass stored `queued` and then failed to publish): `StaleTaskSweeper` finds queued tasks
  older than QUEUED_STALE_S while no job waits for a worker, and publishes their job again. The event
  id is the task's own, so a job that did exist after all dedupes within JetStream's window, and a
  worker handed a job for a task already running or finished does nothing with it. The sweeper also
  fails waiting tasks whose voice no longer exists, and releases waiting tasks of a voice that has
  been decided (the verdict's release pass died half-way).

Only tasks created within SWEEP_HORIZON_S are looked at (task ids carry their creation time, so
older ones are skipped without a read), and a sweeper remembers the tasks it has seen finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from common.ids import id_time_s
from events.records import VOICE_DELETED, TaskRecord, TaskStatus, VoiceStatus
from events.supervision import periodically
from events.task_events import failed_event, requested_event
from wechat_adapter import review
from wechat_adapter.context import Gateway

log = logging.getLogger(__name__)

QUEUED_STALE_S = 300.0  # a queued task untouched this long, with no job waiting, lost its job
SWEEP_INTERVAL_S = 60.0
SWEEP_HORIZON_S = 24 * 3600.0
STOP_GRACE_S = 5.0
_WAITING = frozenset({TaskStatus.QUEUED, TaskStatus.AWAITING_REVIEW})


async def fail_tasks_of_deleted_voice(gateway: Gateway, owner: str, voice_id: str) -> int:
    """Fail the voice's tasks that wait for it; returns how many were failed now. A running task is
    its worker's: failed if the worker finds the sample gone, finished if it read the sample before
    the deletion (what it stores of the voice it then removes again)."""
    failed = 0
    for task in await gateway.state.tasks.list_for(owner):
        if task.voice_id == voice_id and task.status in _WAITING:
            failed += await _fail_for_deleted_voice(gateway, task)
    return failed


async def _fail_for_deleted_voice(gateway: Gateway, task: TaskRecord) -> int:
    moved = await gateway.state.tasks.transition(
        task.owner, task.task_id, TaskStatus.FAILED, error=VOICE_DELETED, allowed_from=_WAITING
    )
    if moved is None or moved.status != TaskStatus.FAILED or moved.error != VOICE_DELETED:
        return 0
    await gateway.bus.publish(failed_event(moved, VOICE_DELETED))
    log.info("task %s failed: its voice %s was deleted", task.task_id, task.voice_id)
    return 1


class StaleTaskSweeper:
    """Supervised work of the gateway: every SWEEP_INTERVAL_S, look at the recent tasks still waiting."""

    def __init__(self, gateway: Gateway, *, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self._gateway = gateway
        self.interval_s = interval_s
        self._finished: dict[str, float] = {}  # key -> creation time, of tasks seen final

    async def run(self, stopping: asyncio.Event) -> None:
        await periodically(self.sweep, interval_s=self.interval_s, what="stale task sweep")(stopping)

    async def sweep(self, *, now_s: float | None = None) -> int:
        """One round; returns how many tasks it moved on (failed, released or re-queued)."""
        now_s = time.time() if now_s is None else now_s
        self._forget_older_than(now_s - SWEEP_HORIZON_S)
        moved = 0
        for key in await self._gateway.state.tasks.keys("*.*"):
            created_s = id_time_s(key.partition(".")[2])
            if (
                created_s is None
                or key in self._finished
                or not (now_s - SWEEP_HORIZON_S <= created_s <= now_s - QUEUED_STALE_S)
            ):
                continue
            owner, _, task_id = key.partition(".")
            task = await self._gateway.state.tasks.get(owner, task_id)
            if task is None or task.status.is_final:
                self._finished[key] = created_s
                continue
            if task.status in _WAITING:
                moved += await self._settle(task, now_s)
        if moved:
            log.info("stale task sweep moved %d task(s) on", moved)
        return moved

    async def _settle(self, task: TaskRecord, now_s: float) -> int:
        gateway = self._gateway
        voice = await gateway.state.voices.get(task.owner, task.voice_id)
        if voice is None:
            return await _fail_for_deleted_voice(gateway, task)
        if task.status == TaskStatus.AWAITING_REVIEW:
            if voice.status == VoiceStatus.PENDING_REVIEW:
                return 0  # the review timeout decides the voice, and then its tasks
            await review.release_waiting_tasks(gateway, voice)
            return 1
        if now_s - _epoch_s(task.updated_at) < QUEUED_STALE_S or await gateway.queue.pending() > 0:
            return 0  # a job may still be on its way to a worker
        user_key = await gateway.state.user_keys.key_for(task.owner)
        await gateway.bus.publish(requested_event(task, voice, user_key))
        log.warning(
            "task %s was queued with no job for %.0f s; job published again",
            task.task_id,
            now_s - _epoch_s(task.updated_at),
        )
        return 1

    def _forget_older_than(self, horizon_s: float) -> None:
        self._finished = {key: created for key, created in self._finished.items() if created >= horizon_s}


def _epoch_s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
