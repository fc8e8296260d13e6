"""Deciding voices whose audio verdict never comes (MEDIA_REVIEW_TIMEOUT_S, MEDIA_REVIEW_TIMEOUT_POLICY).

WeChat promises a mediaCheckAsync verdict within 30 minutes, but a push can be lost for good. Without
this loop such a voice would stay pending_review, and its tasks awaiting_review, forever.

Design: the sweeper never changes a voice itself. For every media check older than the timeout whose
voice is still pending, it publishes the decision as a `tts.voice.reviewed` event (suggest "timeout",
decision ready|rejected, built by `review.timeout_event`) — the event type WeChat's pushes become —
and the review consumer applies it with the very code that applies WeChat's verdicts
(`review.apply_verdict`). That one choice gives:
- one code path that decides a voice and releases or rejects its waiting tasks;
- first verdict wins: the consumer's compare-and-set from pending_review means a timeout racing a real
  verdict (or another instance's timeout) decides the voice once, and tasks move once;
- the decision is in the audit log before it takes effect, and survives a crash: once published,
  JetStream redelivers it until applied (deciding in place could die between voice and tasks);
- several instances may sweep: their events share one id, so the stream drops duplicates.

What is scanned: the media_checks table (an entry per review, 24 h TTL). Entries are not deleted —
the consumer still needs them to place late or repeated pushes — so each sweeper remembers when each
entry falls due and which it has settled: a round lists the keys, and reads only new entries and those
due but not settled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from events.records import MediaCheckRecord, VoiceStatus
from events.supervision import periodically
from wechat_adapter import review
from wechat_adapter.context import Gateway

log = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL_S = 60.0
_DECISIONS = {"reject": VoiceStatus.REJECTED, "accept": VoiceStatus.READY}


def sweep_interval_s(timeout_s: float) -> float:
    """Often enough that a voice is decided within a quarter of the timeout after it falls due."""
    return min(MAX_SWEEP_INTERVAL_S, timeout_s / 4)


def decision_for(policy: str) -> VoiceStatus:
    """MEDIA_REVIEW_TIMEOUT_POLICY ("reject" or "accept") as the status it gives the voice."""
    try:
        return _DECISIONS[policy]
    except KeyError:
        raise ValueError(f"unknown media review timeout policy {policy!r}") from None


class ReviewTimeoutSweeper:
    """Publishes a timeout decision for each overdue media check whose voice is still pending."""

    # Stopping waits this long for a round in progress: every step of a round is safe to repeat.
    STOP_GRACE_S = 5.0

    def __init__(
        self, gateway: Gateway, *, timeout_s: float, decision: VoiceStatus, interval_s: float
    ) -> None:
        self._gateway = gateway
        self._timeout_s = timeout_s
        self.interval_s = interval_s
        self._decision = decision
        self._waiting: dict[str, MediaCheckRecord] = {}  # read, not yet settled
        self._settled: set[str] = set()  # voice decided, deleted, or our decision published

    async def sweep(self, *, now_s: float | None = None) -> int:
        """One round; returns how many timeout decisions it published."""
        now_s = time.time() if now_s is None else now_s
        live = set(await self._gateway.state.media_checks.keys(">"))
        self._forget_all_but(live)
        published = 0
        for trace_id in live - self._settled:
            check = await self._check(trace_id)
            if check is not None and self._due_at_s(check) <= now_s:
                published += await self._settle(check)
        return published

    def _forget_all_but(self, live: set[str]) -> None:
        """Entries that expired or were deleted need no memory any more."""
        self._settled &= live
        for trace_id in self._waiting.keys() - live:
            del self._waiting[trace_id]

    async def _check(self, trace_id: str) -> MediaCheckRecord | None:
        check = self._waiting.get(trace_id)
        if check is None:
            check = await self._gateway.state.media_checks.get(trace_id)
            if check is not None:
                self._waiting[trace_id] = check
        return check

    def _due_at_s(self, check: MediaCheckRecord) -> float:
        return datetime.fromisoformat(check.created_at).timestamp() + self._timeout_s

    async def _settle(self, check: MediaCheckRecord) -> int:
        """Publish our decision if the voice is still pending; either way the check needs no more rounds."""
        state = self._gateway.state
        voice = await state.voices.get(check.owner, check.voice_id)
        published = 0
        if voice is not None and voice.status == VoiceStatus.PENDING_REVIEW:
            await self._gateway.bus.publish(review.timeout_event(check, self._decision))
            log.info(
                "voice %s: no media verdict within %.0f s; decided %s",
                check.voice_id,
                self._timeout_s,
                self._decision,
            )
            log.debug("voice %s: media check %s timed out", check.voice_id, check.trace_id)
            published = 1
        del self._waiting[check.trace_id]
        self._settled.add(check.trace_id)
        return published

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every `interval_s` until `stopping` is set (supervised work)."""
        await periodically(self.sweep, interval_s=self.interval_s, what="review timeout sweep")(stopping)

    @classmethod
    def for_gateway(cls, gateway: Gateway, *, interval_s: float | None = None) -> ReviewTimeoutSweeper:
        """The sweeper the settings ask for (every `sweep_interval_s(timeout)` unless told otherwise)."""
        settings = gateway.settings
        timeout_s = float(settings.media_review_timeout_s)
        return cls(
            gateway,
            timeout_s=timeout_s,
            decision=decision_for(settings.media_review_timeout_policy),
            interval_s=sweep_interval_s(timeout_s) if interval_s is None else interval_s,
        )
