"""Supervised background work: a process's consumers and periodic tasks, started together, watched
while they run, and stopped in reverse order with grace-then-cancel.

Each piece of work is a coroutine function that runs until the `asyncio.Event` it is given is set.
A piece that ends on its own while the supervisor runs — it raised, or it returned — is a failure:
it is logged at once (not at shutdown), `liveness()` reports it, and `watch()` raises `WorkEnded`, so
the process can exit and be restarted instead of idling without a consumer. The gateway's `/readyz`
and the worker's main loop are both built on that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import nats.errors

log = logging.getLogger(__name__)

Work = Callable[[asyncio.Event], Awaitable[None]]
"""Runs until the event is set, then returns soon (finishing the item in hand)."""

DEFAULT_GRACE_S = 10.0


class WorkEnded(RuntimeError):
    """A piece of background work ended while the process was meant to run."""


async def stop_gracefully(task: asyncio.Task[None], stopping: asyncio.Event, *, grace_s: float) -> None:
    """Ask the work to stop, give it `grace_s` to finish the item in hand, then cancel it.

    Whatever the task raised is left for its owner to read (`task.exception()`); this only stops it.
    """
    stopping.set()
    if task.done():
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except TimeoutError:
        log.warning("%s did not finish within %.0f s; cancelling", task.get_name(), grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    except Exception:  # it failed while stopping: its exception stays on the task for the owner
        pass


def periodically(round_: Callable[[], Awaitable[object]], *, interval_s: float, what: str) -> Work:
    """Work that runs `round_` every `interval_s` until stopped (a sweeper). A round that fails on
    NATS trouble is logged and tried again next time; any other error ends the work (and so the
    supervisor reports it)."""

    async def run(stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await round_()
            except nats.errors.Error as exc:
                log.warning("%s failed; next try in %.1f s: %r", what, interval_s, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)

    return run


async def shutdown_executor(executor: Executor) -> None:
    """Shut a thread pool down without blocking the event loop: work in progress (a decode, a
    synthesis cancelled past its grace) finishes in its thread while the loop goes on."""
    await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


@dataclass(slots=True)
class _Running:
    name: str
    task: asyncio.Task[None]
    stopping: asyncio.Event
    grace_s: float


class Supervisor:
    """Owns a set of background tasks for the duration of an `async with` block."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._running: list[_Running] = []
        self._ended = asyncio.Event()
        self._stopping = False

    def start(self, name: str, work: Work, *, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Start `work` now; it is stopped (in reverse start order) when the supervisor stops."""
        if self._stopping:
            raise RuntimeError(f"{self._owner}: cannot start {name} while stopping")
        if any(running.name == name for running in self._running):
            raise ValueError(f"{self._owner}: {name} is already running")
        stopping = asyncio.Event()
        task = asyncio.create_task(work(stopping), name=name)
        task.add_done_callback(self._on_done)
        self._running.append(_Running(name, task, stopping, grace_s))

    def liveness(self) -> dict[str, bool]:
        """Each piece of work by name: True while it runs."""
        return {running.name: not running.task.done() for running in self._running}

    @property
    def alive(self) -> bool:
        return all(self.liveness().values())

    def task(self, name: str) -> asyncio.Task[None]:
        """The task running `name` (tests use it to kill one)."""
        return next(running.task for running in self._running if running.name == name)

    async def watch(self, stop: asyncio.Event) -> None:
        """Return when `stop` is set; raise WorkEnded as soon as any piece of work ends before that."""
        stopped = asyncio.create_task(stop.wait(), name=f"{self._owner}:stop")
        ended = asyncio.create_task(self._ended.wait(), name=f"{self._owner}:ended")
        try:
            await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (stopped, ended):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        if not stop.is_set():
            raise self._ended_error()

    async def stop(self) -> None:
        """Stop every piece, last started first, each with its own grace period."""
        self._stopping = True
        for running in reversed(self._running):
            await stop_gracefully(running.task, running.stopping, grace_s=running.grace_s)
        for running in self._running:  # retrieved, so asyncio does not report them again at exit
            if not running.task.cancelled():
                running.task.exception()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        self._ended.set()
        if task.cancelled():
            log.error("%s: %s was cancelled", self._owner, task.get_name())
        elif (exc := task.exception()) is not None:
            log.error("%s: %s failed", self._owner, task.get_name(), exc_info=exc)
        else:
            log.error("%s: %s ended on its own", self._owner, task.get_name())

    def _ended_error(self) -> WorkEnded:
        ended = next(running.task for running in self._running if running.task.done())
        if ended.cancelled():
            return WorkEnded(f"{ended.get_name()} was cancelled")
        reason = ended.exception()
        error = WorkEnded(
            f"{ended.get_name()} ended: {reason!r}" if reason else f"{ended.get_name()} returned"
        )
        error.__cause__ = reason
        return error
