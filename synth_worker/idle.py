"""Work a job leaves behind that must not slow the next job down: run while the worker is idle.

The speaker similarity of a finished task (synth_worker/jobs.py) is measured on the engine's executor,
the one thread the engine has. Measured right after each job, it would hold that thread for tens of
milliseconds just when the next job of a user who is waiting for it arrives. So it waits here until no
job has run for `settle_s`, and runs one item at a time, each owned by this queue: `settle()` runs the
pending ones now and waits for them, `close()` waits for the one running (up to a grace period) and
drops the rest.

Bounded: at most `max_pending` items and `max_bytes` of the audio they hold; past that the oldest are
dropped (`on_dropped`), so a worker that is never idle measures what it can instead of piling up. A
deleted voice's pending items are dropped at once (`forget_voice`): its audio does not stay in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

DropReason = Literal["backlog", "voice_deleted", "shutdown"]


@dataclass(frozen=True, slots=True)
class IdleItem:
    owner: str
    voice_id: str
    nbytes: int  # the audio it holds until it runs
    run: Callable[[], Awaitable[None]]  # what to do; its exceptions are logged, never raised


class IdleQueue:
    def __init__(
        self,
        *,
        settle_s: float,
        max_pending: int,
        max_bytes: int,
        on_dropped: Callable[[IdleItem, DropReason], None] = lambda item, reason: None,
    ) -> None:
        if settle_s < 0 or max_pending < 1 or max_bytes < 1:
            raise ValueError("settle_s must be >= 0, max_pending and max_bytes >= 1")
        self._settle_s, self._max_pending, self._max_bytes = settle_s, max_pending, max_bytes
        self._on_dropped = on_dropped
        self._pending: deque[IdleItem] = deque()
        self._bytes = 0
        self._jobs = 0  # jobs running now
        self._last_job_end = -math.inf  # loop time
        self._flushing = 0  # settle() calls waiting: run without waiting for idleness
        self._changed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._in_item = False
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a job running for the duration of the block."""
        self._jobs += 1
        self._signal()
        try:
            yield
        finally:
            self._jobs -= 1
            self._last_job_end = asyncio.get_running_loop().time()
            self._signal()

    def submit(self, item: IdleItem) -> None:
        if self._closed:
            self._on_dropped(item, "shutdown")
            return
        self._pending.append(item)
        self._bytes += item.nbytes
        while len(self._pending) > self._max_pending or self._bytes > self._max_bytes:
            self._drop(self._pending.popleft(), "backlog")
        self._signal()
        if self._pending and (self._runner is None or self._runner.done()):
            self._runner = asyncio.create_task(self._drain(), name="idle-work")

    def forget_voice(self, owner: str, voice_id: str) -> int:
        """Drop the voice's pending items (the voice was deleted); how many there were."""
        gone = [item for item in self._pending if (item.owner, item.voice_id) == (owner, voice_id)]
        for item in gone:
            self._pending.remove(item)
            self._drop(item, "voice_deleted")
        return len(gone)

    async def settle(self) -> None:
        """Run every pending item now, idle or not, and wait until they are done."""
        self._flushing += 1
        self._signal()
        try:
            while self._runner is not None and not self._runner.done():
                await asyncio.wait({self._runner})
        finally:
            self._flushing -= 1

    async def close(self, grace_s: float = 5.0) -> None:
        """Drop what is pending; let the item running now finish (up to `grace_s`), else cancel it."""
        self._closed = True
        while self._pending:
            self._drop(self._pending.popleft(), "shutdown")
        runner = self._runner
        if runner is None or runner.done():
            return
        if self._in_item:
            await asyncio.wait({runner}, timeout=grace_s)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    def _drop(self, item: IdleItem, reason: DropReason) -> None:
        self._bytes -= item.nbytes
        self._on_dropped(item, reason)

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _drain(self) -> None:
        while self._pending:
            await self._until_idle()
            if not self._pending:  # forgotten while it waited
                return
            item = self._pending.popleft()
            self._bytes -= item.nbytes
            self._in_item = True
            try:
                await item.run()
            except Exception:
                log.exception("work left by a job failed")
            finally:
                self._in_item = False

    async def _until_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._flushing:
            timeout_s: float | None = None
            if self._jobs == 0:
                timeout_s = self._last_job_end + self._settle_s - loop.time()
                if timeout_s <= 0:
                    return
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout_s)
