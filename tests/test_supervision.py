"""Supervised background work: a piece that dies is noticed at once, and stopping is ordered and bounded.

The first tests drive `events.supervision.Supervisor` alone; the last kills the notifier's consumer in a
running gateway and watches `/readyz` turn to 503.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from stack import Stack, another_gateway

from events import names
from events.supervision import Supervisor, WorkEnded
from ops.client import eventually


async def until_stopped(stopping: asyncio.Event) -> None:
    await stopping.wait()


async def test_a_piece_that_raises_is_logged_at_once_and_ends_watch(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(stopping: asyncio.Event) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("consumer fell over")

    async with Supervisor("test") as supervisor:
        supervisor.start("steady", until_stopped)
        supervisor.start("broken", broken)
        with pytest.raises(WorkEnded, match="broken ended: RuntimeError"):
            await asyncio.wait_for(supervisor.watch(asyncio.Event()), 5)
        assert supervisor.liveness() == {"steady": True, "broken": False}
        assert not supervisor.alive
    failure = [r for r in caplog.records if r.levelno == logging.ERROR and "broken failed" in r.getMessage()]
    assert failure and failure[0].exc_info is not None


async def test_a_piece_that_returns_or_is_cancelled_counts_as_ended() -> None:
    async def returns(stopping: asyncio.Event) -> None:
        return None

    async with Supervisor("test") as supervisor:
        supervisor.start("returns", returns)
        with pytest.raises(WorkEnded, match="returns returned"):
            await asyncio.wait_for(supervisor.watch(asyncio.Event()), 5)

    async with Supervisor("test") as supervisor:
        supervisor.start("victim", until_stopped)
        supervisor.task("victim").cancel()
        with pytest.raises(WorkEnded, match="victim was cancelled"):
            await asyncio.wait_for(supervisor.watch(asyncio.Event()), 5)


async def test_watch_returns_quietly_when_asked_to_stop() -> None:
    stop = asyncio.Event()
    async with Supervisor("test") as supervisor:
        supervisor.start("steady", until_stopped)
        stop.set()
        await asyncio.wait_for(supervisor.watch(stop), 5)
        assert supervisor.alive


async def test_stop_goes_in_reverse_order_and_cancels_after_the_grace() -> None:
    stopped: list[str] = []

    def polite(name: str):
        async def work(stopping: asyncio.Event) -> None:
            await stopping.wait()
            stopped.append(name)

        return work

    async def stubborn(stopping: asyncio.Event) -> None:
        try:
            await asyncio.Event().wait()  # ignores `stopping`
        except asyncio.CancelledError:
            stopped.append("stubborn (cancelled)")
            raise

    supervisor = Supervisor("test")
    supervisor.start("first", polite("first"))
    supervisor.start("stubborn", stubborn, grace_s=0.05)
    supervisor.start("last", polite("last"))
    await supervisor.stop()
    assert stopped == ["last", "stubborn (cancelled)", "first"]
    with pytest.raises(RuntimeError, match="while stopping"):
        supervisor.start("late", until_stopped)


async def test_a_dead_notifier_makes_the_gateway_unready(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    async with another_gateway(stack) as (url, gateway):
        async with stack.http.get(f"{url}/readyz") as response:
            ready = await response.json()
        assert response.status == 200, ready
        assert set(ready["consumers"]) >= {
            names.NOTIFIER_CONSUMER,
            names.NOTIFIER_DEADLETTER_CONSUMER,
            names.REVIEW_CONSUMER,
            names.REVIEW_DEADLETTER_CONSUMER,
            "review-timeout-sweeper",
        }
        assert all(ready["consumers"].values()), ready

        gateway.background.task(names.NOTIFIER_CONSUMER).cancel()
        await eventually(lambda: not gateway.background.alive, timeout_s=5)

        async with stack.http.get(f"{url}/readyz") as response:
            unready = await response.json()
        assert response.status == 503, unready
        assert unready["status"] == "unavailable"
        assert unready["checks"]["consumers"] is False
        assert unready["consumers"][names.NOTIFIER_CONSUMER] is False
        assert unready["consumers"][names.REVIEW_CONSUMER] is True
    assert any(
        r.levelno == logging.ERROR and f"{names.NOTIFIER_CONSUMER} was cancelled" in r.getMessage()
        for r in caplog.records
    )
