"""Applying audio verdicts: a voice becomes ready or rejected, and its waiting tasks move on.

Verdicts reach us as `tts.voice.reviewed` events from two sources, and this consumer applies both:
- WeChat's `wxa_media_check` push (views/push.py): event id `review.<trace_id>`, suggest pass/review/risky;
- the review-timeout sweeper (review_timeout.py), when WeChat stays silent too long: event id
  `review.<trace_id>.timeout`, suggest "timeout" and the policy's `decision` (ready or rejected).

`apply_verdict` is a compare-and-set from pending_review, so the first verdict consumed decides the
voice, whichever its source, and every later one (a repeated push, a late WeChat verdict after a
timeout, a second instance's timeout) changes nothing. Each one still re-runs the release of waiting
tasks, which is idempotent (each task moves at most once) and finishes the job if a previous delivery
died half-way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.msg import Msg

from common.ids import new_id
from common.owners import is_valid_owner, owned_key
from events import names
from events.bus import consumer_spec
from events.consumer import ConsumerLoop, DeadLetter, dead_letter_consumer, event_consumer
from events.envelope import Envelope, new_event
from events.names import EventType
from events.records import ErrorInfo, MediaCheckRecord, TaskStatus, VoiceRecord, VoiceStatus
from events.retry import RetryPolicy
from events.task_events import failed_event, requested_event
from wechat_adapter.context import Gateway
from wechat_adapter.errors import ERRORS

log = logging.getLogger(__name__)

# A verdict can arrive before media_check_async has returned its trace_id to us: wait for the mapping,
# 1 s between deliveries. Giving up below the review consumer's max_deliver, so the last attempt can
# still log and terminate.
_UNKNOWN_TRACE_RETRY = RetryPolicy(
    first_delay_s=1.0, max_delay_s=1.0, give_up_after=consumer_spec(names.REVIEW_CONSUMER).max_deliver - 1
)

# The `suggest` (and review label) of a decision taken because WeChat's verdict never came.
TIMEOUT_SUGGEST = "timeout"
_TIMEOUT_DECISIONS = frozenset({VoiceStatus.READY, VoiceStatus.REJECTED})
_AWAITING_OR_QUEUED = frozenset({TaskStatus.AWAITING_REVIEW, TaskStatus.QUEUED})


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reviewed event decides for a pending voice."""

    status: VoiceStatus
    label: str


async def record_wechat_verdict(gateway: Gateway, message: dict[str, Any]) -> None:
    """A verified `wxa_media_check` push becomes a `tts.voice.reviewed` event for this consumer."""
    trace_id = message.get("trace_id")
    result = message.get("result") or {}
    if not isinstance(trace_id, str) or not trace_id or not isinstance(result, dict):
        log.warning("media check push without trace_id or result")
        return
    openid = message.get("FromUserName")
    await gateway.bus.publish(
        new_event(
            EventType.VOICE_REVIEWED,
            openid=openid if isinstance(openid, str) and is_valid_owner(openid) else "",
            trace_id=new_id("tr"),
            # Repeated pushes of one verdict dedupe on the stream; the consumer is idempotent too.
            event_id=f"review.{trace_id}",
            data={
                "media_trace_id": trace_id,
                "suggest": str(result.get("suggest", "")),
                "label": str(result.get("label", "")),
            },
        )
    )
    # Media-check trace ids stay out of info logs (they tie a WeChat verdict to a voice): debug only.
    log.debug("media verdict for %s: %s/%s", trace_id, result.get("suggest"), result.get("label"))


def voice_status_for(suggest: str) -> VoiceStatus:
    """`pass` admits the voice; `risky` and `review` reject it (a human review never reaches us)."""
    return VoiceStatus.READY if suggest == "pass" else VoiceStatus.REJECTED


def verdict_of(event: Envelope) -> Verdict | None:
    """The verdict a reviewed event carries; None for a timeout event without a valid decision."""
    suggest = str(event.data.get("suggest", ""))
    if suggest != TIMEOUT_SUGGEST:
        return Verdict(voice_status_for(suggest), str(event.data.get("label", "")))
    decision = event.data.get("decision")
    if decision not in _TIMEOUT_DECISIONS:
        return None
    return Verdict(VoiceStatus(decision), TIMEOUT_SUGGEST)


def timeout_event(check: MediaCheckRecord, decision: VoiceStatus) -> Envelope:
    """The reviewed event that decides a voice whose verdict never came.

    The id is the same for every instance that sweeps this check, so the stream dedupes them; it
    differs from the push's `review.<trace_id>`, so a late WeChat verdict is still recorded.
    """
    return new_event(
        EventType.VOICE_REVIEWED,
        openid=check.owner,
        trace_id=new_id("tr"),
        voice_id=check.voice_id,
        event_id=f"review.{check.trace_id}.{TIMEOUT_SUGGEST}",
        data={
            "media_trace_id": check.trace_id,
            "suggest": TIMEOUT_SUGGEST,
            "label": TIMEOUT_SUGGEST,
            "decision": str(decision),
        },
    )


async def apply_verdict(gateway: Gateway, check: MediaCheckRecord, verdict: Verdict) -> VoiceRecord | None:
    """Decide the voice unless it is decided already, then move its waiting tasks on.

    Returns the voice as stored afterwards, None when it has been deleted.
    """
    decided_now = False

    def judge(voice: VoiceRecord) -> VoiceRecord | None:
        nonlocal decided_now
        if voice.status != VoiceStatus.PENDING_REVIEW:
            return None  # the first verdict stands
        decided_now = True
        return msgspec.structs.replace(voice, status=verdict.status, review_label=verdict.label)

    voice = await gateway.state.voices.update(owned_key(check.owner, check.voice_id), judge)
    if voice is None:
        log.info("verdict for deleted voice %s ignored", check.voice_id)
        return None
    if decided_now:
        log.info("voice %s reviewed: %s (label %s)", voice.voice_id, voice.status, verdict.label)
    else:
        log.info(
            "voice %s already %s; verdict %s (label %s) ignored",
            voice.voice_id,
            voice.status,
            verdict.status,
            verdict.label,
        )
    await release_waiting_tasks(gateway, voice)
    return voice


async def release_waiting_tasks(gateway: Gateway, voice: VoiceRecord) -> None:
    """Queue (ready voice) or reject (rejected voice) every task of the voice still awaiting review.

    For a ready voice the job of every queued task is published, including tasks an earlier pass
    queued: a pass that died between storing `queued` and publishing (the verdict is then redelivered)
    is finished by the next one. The job's event id is the task's own, so publishing it again dedupes.
    """
    tasks = gateway.state.tasks
    ready = voice.status == VoiceStatus.READY
    releasable = _AWAITING_OR_QUEUED if ready else frozenset({TaskStatus.AWAITING_REVIEW})
    waiting = [
        t
        for t in await tasks.list_for(voice.owner)
        if t.voice_id == voice.voice_id and t.status in releasable
    ]
    for task in waiting:
        if ready:
            moved = await tasks.transition(
                task.owner, task.task_id, TaskStatus.QUEUED, allowed_from=_AWAITING_OR_QUEUED
            )
            if moved is not None and moved.status == TaskStatus.QUEUED:
                user_key = await gateway.state.user_keys.key_for(moved.owner)
                await gateway.bus.publish(requested_event(moved, voice, user_key))
        else:
            error = ErrorInfo("voice_rejected", ERRORS["voice_rejected"][1])
            rejected = await tasks.transition(
                task.owner,
                task.task_id,
                TaskStatus.REJECTED,
                error=error,
                allowed_from=frozenset({TaskStatus.AWAITING_REVIEW}),
            )
            if rejected is not None and rejected.status == TaskStatus.REJECTED:
                await gateway.bus.publish(failed_event(rejected, error))


class ReviewHandler:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, event: Envelope, msg: Msg) -> None:
        trace_id = str(event.data.get("media_trace_id", ""))
        check = await self._gateway.state.media_checks.get(trace_id) if trace_id else None
        if check is None:
            await self._unknown_check(event, msg, trace_id)
            return
        verdict = verdict_of(event)
        if verdict is None:
            log.error("reviewed event %s has no usable decision: %s", event.id, event.data)
            await msg.term()
            return
        await apply_verdict(self._gateway, check, verdict)
        await msg.ack()

    async def dead_letter(self, letter: DeadLetter, msg: Msg) -> None:
        """A verdict whose deliveries ran out while applying it kept failing: apply it now. Should
        this fail too, the dead-letter consumer tries again, backing off (a verdict is never dropped
        in silence; were it lost for good, the review timeout would still decide the voice)."""
        event = letter.event
        trace_id = str(event.data.get("media_trace_id", ""))
        check = await self._gateway.state.media_checks.get(trace_id) if trace_id else None
        verdict = verdict_of(event)
        if check is None or verdict is None:
            log.warning("dead-lettered verdict %s has no media check or decision left; dropped", event.id)
            await msg.ack()
            return
        await apply_verdict(self._gateway, check, verdict)
        log.warning("verdict %s applied from a dead letter after %d deliveries", event.id, letter.deliveries)
        await msg.ack()

    async def _unknown_check(self, event: Envelope, msg: Msg, trace_id: str) -> None:
        # The sweeper only times out a check it has read, so a timeout event without one means the
        # voice was deleted since: nothing to wait for.
        timed_out = event.data.get("suggest") == TIMEOUT_SUGGEST
        if not timed_out and not _UNKNOWN_TRACE_RETRY.gives_up(msg.metadata.num_delivered):
            await msg.nak(delay=_UNKNOWN_TRACE_RETRY.delay_s(msg.metadata.num_delivered))
            return
        log.warning("verdict for unknown media check %s dropped", trace_id)
        await msg.term()


def consumer(gateway: Gateway) -> ConsumerLoop[Envelope]:
    """The review consumer's loop, for the gateway's supervisor."""
    return event_consumer(gateway.bus, names.REVIEW_CONSUMER, ReviewHandler(gateway))


def dead_letter_consumer_of(gateway: Gateway) -> ConsumerLoop[DeadLetter]:
    """The review consumer's dead letters, for the gateway's supervisor."""
    handler = ReviewHandler(gateway)
    return dead_letter_consumer(gateway.bus, names.REVIEW_DEADLETTER_CONSUMER, handler.dead_letter)
