"""Restarting children that die: RestartPolicy (exponential backoff, capped, forgotten once a process
has stayed up a while), Backoff (one service's failure streak and restart count under that policy; both
pure, no processes), and Supervision, which keeps chosen children of a Stack running, restarting each
one that exits after its backoff delay, until any other child of the stack exits.

A restart is the same ManagedProcess started again: the same command and environment, its log file
appended to (a `=== … starting` line marks each life), its leftover helpers swept first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import time
from collections.abc import Iterable
from typing import NoReturn

from events.retry import RetryPolicy
from ops.services.processes import ManagedProcess, ServiceError
from ops.services.stack import Stack

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Wait first_delay_s before the first restart of a streak, twice as long before each next one
    (the project's one backoff rule, `events.retry.RetryPolicy`), never more than max_delay_s; a
    process that stayed up stable_after_s starts a new streak."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        """The wait before restart `attempt` (1 = the first) of a streak: 1, 2, 4, 8, 16, 30, 30 … s."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        # A supervisor never gives up on a child; only the delay rule is shared.
        rule = RetryPolicy(self.first_delay_s, self.max_delay_s, give_up_after=sys.maxsize)
        return rule.delay_s(attempt)


@dataclasses.dataclass(slots=True)
class Backoff:
    """One service's restarts: `attempt` in the current streak, `restarts` in all."""

    policy: RestartPolicy = dataclasses.field(default_factory=RestartPolicy)
    attempt: int = 0
    restarts: int = 0

    def next_delay_s(self, uptime_s: float) -> float:
        """Count a restart of a process that was up `uptime_s`; return how long to wait before it."""
        if uptime_s >= self.policy.stable_after_s:
            self.attempt = 0  # it ran fine for a while: this death is news, not part of a crash loop
        self.attempt += 1
        self.restarts += 1
        return self.policy.delay_s(self.attempt)


async def keep_running(process: ManagedProcess, backoff: Backoff) -> NoReturn:
    """Restart `process` each time it exits, after backoff's delay, and wait until it is ready again.

    Runs until cancelled; the process is left as it is then (its owner stops it). A restart that is not
    ready in time counts as another failure. Raises ServiceError only when it cannot even be launched.
    """
    up_since = time.monotonic()
    while True:
        await process.wait_exit()
        delay_s = backoff.next_delay_s(time.monotonic() - up_since)
        log.warning(
            "%s exited unexpectedly (%s); restarting it in %g s (attempt %d, restart %d of this run; log %s)",
            process.name, process.describe_exit(), delay_s, backoff.attempt, backoff.restarts,
            process.log_path,
        )  # fmt: skip
        await asyncio.sleep(delay_s)
        process.start()  # sweeps the dead one's group first; logs "<name> started (pid N, log …)"
        up_since = time.monotonic()
        try:
            await process.wait_ready()
        except ServiceError as exc:
            log.error("%s did not come back: %s", process.name, exc)
            if process.running:  # up but never ready: stop it, and the next round counts it
                await process.stop()


class Supervision:
    """Keeps the given children of `stack` running (see keep_running) and counts their restarts."""

    def __init__(
        self, stack: Stack, restartable: Iterable[ManagedProcess], policy: RestartPolicy | None = None
    ) -> None:
        self.stack = stack
        self._restartable = tuple(restartable)
        self._backoffs = {p.name: Backoff(policy or RestartPolicy()) for p in self._restartable}

    @property
    def restarts(self) -> dict[str, int]:
        """Restarts so far, per service name."""
        return {name: backoff.restarts for name, backoff in self._backoffs.items()}

    async def run(self) -> ManagedProcess:
        """Restart the supervised children as they die; return the first other child of the stack that
        exits (the caller decides: for `ops up`, the end of the stack). Cancel it to stop supervising."""
        restarting = [
            asyncio.create_task(keep_running(p, self._backoffs[p.name]), name=f"keep {p.name} running")
            for p in self._restartable
        ]
        fatal = asyncio.create_task(self.stack.wait_for_exit(ignoring=self._restartable))
        try:
            done, _ = await asyncio.wait({fatal, *restarting}, return_when=asyncio.FIRST_COMPLETED)
            if fatal in done:
                return fatal.result()
            next(iter(done)).result()  # keep_running never returns: this raises its error
            raise AssertionError("keep_running returned")
        finally:
            for task in (fatal, *restarting):
                task.cancel()
            await asyncio.gather(fatal, *restarting, return_exceptions=True)
