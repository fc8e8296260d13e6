"""Stack, an ordered group of managed processes with one owner: each child is started and made ready
in turn, the first one to exit can be awaited, and leaving `async with` stops them all, newest first
(the worker and gateway drain against NATS and S3, so those go last), leaving nothing running even
when one refuses to stop or the stop itself is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from types import TracebackType
from typing import Self

from ops.services.processes import _POLL_INTERVAL_S, ManagedProcess

log = logging.getLogger(__name__)


class Stack:
    """Owns every child it starts: leaving `async with` stops them all, newest first.

    Reverse order matters: the worker and gateway drain against NATS and S3, so those go last.
    """

    def __init__(self, *, stop_timeout_s: float = 10.0) -> None:
        self.stop_timeout_s = stop_timeout_s
        self._processes: list[ManagedProcess] = []

    @property
    def processes(self) -> tuple[ManagedProcess, ...]:
        return tuple(self._processes)

    async def start(self, process: ManagedProcess) -> None:
        """Start `process` and wait until it is ready; it is owned (and stopped) even if that fails."""
        self._processes.append(process)
        process.start()
        await process.wait_ready()

    async def wait_for_exit(self, *, ignoring: Collection[ManagedProcess] = ()) -> ManagedProcess:
        """Return the first child that exits, apart from those in `ignoring` (someone else restarts
        them: ops.services.restarts); meant to run while the stack should be up."""
        while True:
            for process in self._processes:
                if process not in ignoring and not process.running:
                    return process
            await asyncio.sleep(_POLL_INTERVAL_S)

    async def stop(self) -> None:
        """Stop every child, newest first; a failure to stop one never keeps the others running."""
        if self._processes:
            log.info("stopping %s", ", ".join(p.name for p in reversed(self._processes)))
        try:
            while self._processes:
                process = self._processes[-1]
                try:
                    await process.stop(self.stop_timeout_s)
                except Exception:
                    log.exception("could not stop %s (pid %s); stopping the rest", process.name, process.pid)
                self._processes.pop()
        except BaseException:
            # Cancelled midway: no time left for a graceful stop, but still leave nothing behind.
            for process in self._processes:
                process.kill()
            self._processes.clear()
            raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
