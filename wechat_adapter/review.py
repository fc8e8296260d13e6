"""Applying WeChat's audio verdicts: a voice becomes ready or rejected, and its waiting tasks move on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec
from nats.aio.msg import Msg

from events import names
from events.consumer import consuming
from events.envelope import Envelope
from events.records import ErrorInfo, TaskStatus, VoiceRecord, VoiceStatus, owned_key
from events.task_events import failed_event, requested_event
from wechat_adapter.context import Gateway
from wechat_adapter.errors import ERRORS

log = logging.getLogger(__name__)

# A verdict can arrive before media_check_async has returned its trace_id to us: wait for the mapping.
_UNKNOWN_TRACE_RETRY_S = 1.0
_UNKNOWN_TRACE_ATTEMPTS = 30


def voice_status_for(suggest: str) -> VoiceStatus:
    """`pass` admits the voice; `risky` and `review` reject it (a human review never reaches us)."""
    return VoiceStatus.READY if suggest == "pass" else VoiceStatus.REJECTED


class ReviewHandler:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, event: Envelope, msg: Msg) -> None:
        state = self._gateway.state
        trace_id = str(event.data.get("media_trace_id", ""))
        check = await state.media_checks.get(trace_id) if trace_id else None
        if check is None:
            if msg.metadata.num_delivered < _UNKNOWN_TRACE_ATTEMPTS:
                await msg.nak(delay=_UNKNOWN_TRACE_RETRY_S)
            else:
                log.warning("verdict for unknown media check %s dropped", trace_id)
                await msg.term()
            return
        status = voice_status_for(str(event.data.get("suggest", "")))
        label = str(event.data.get("label", ""))

        def judge(voice: VoiceRecord) -> VoiceRecord | None:
            if voice.status != VoiceStatus.PENDING_REVIEW:
                return None  # a repeated push: the first verdict stands
            return msgspec.structs.replace(voice, status=status, review_label=label)

        voice = await state.voices.update(owned_key(check.owner, check.voice_id), judge)
        if voice is None:
            log.info("verdict for deleted voice %s ignored", check.voice_id)
        else:
            log.info("voice %s reviewed: %s (label %s)", voice.voice_id, voice.status, label)
            await self._release_waiting_tasks(voice)
        await msg.ack()

    async def _release_waiting_tasks(self, voice: VoiceRecord) -> None:
        tasks = self._gateway.state.tasks
        waiting = [
            t
            for t in await tasks.list_for(voice.owner, limit=10_000)
            if t.voice_id == voice.voice_id and t.status == TaskStatus.AWAITING_REVIEW
        ]
        for task in waiting:
            if voice.status == VoiceStatus.READY:
                moved = await tasks.transition(
                    task.owner,
                    task.task_id,
                    TaskStatus.QUEUED,
                    allowed_from=frozenset({TaskStatus.AWAITING_REVIEW}),
                )
                if moved is not None and moved.status == TaskStatus.QUEUED:
                    await self._gateway.bus.publish(requested_event(moved, voice))
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
                    await self._gateway.bus.publish(failed_event(rejected, error))


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[None]:
    async with consuming(gateway.bus, names.REVIEW_CONSUMER, ReviewHandler(gateway)):
        yield
