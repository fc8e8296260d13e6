"""Every worker hears every voice deletion and forgets what it keeps of that voice.

A deleted voice's sample and stored features are erased by the gateway; what a worker holds in
memory (speaker profiles, an engine's registered speakers) only that worker can drop. So each worker
follows `tts.voice.deleted` on an ordered consumer of its own, from the events after it started (one
that starts later holds nothing older), as supervised work: if following fails, the worker exits and
is restarted, with nothing in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from common.owners import is_valid_owner
from events import names
from events.bus import EventBus
from events.envelope import MalformedEvent, decode_envelope

log = logging.getLogger(__name__)

VoiceDeletedHandler = Callable[[str, str], Awaitable[None]]  # (owner, voice_id)

_WAIT_S = 1.0  # how often the loop looks up from an idle subscription to see whether to stop


class VoiceDeletions:
    """Supervised work: hand each `tts.voice.deleted` to `handler(owner, voice_id)`.

    Made by `follow`, which subscribes at once, so deletions published from then on are all seen
    even before the supervisor runs the loop. A handler that raises ends the loop (and the worker).
    """

    def __init__(self, subscription: JetStreamContext.PushSubscription, handler: VoiceDeletedHandler) -> None:
        self._subscription = subscription
        self._handler = handler

    @classmethod
    async def follow(cls, bus: EventBus, handler: VoiceDeletedHandler) -> VoiceDeletions:
        return cls(await bus.follow_subscription(names.WORKER_ERASURE_SUBJECT), handler)

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("following %s", names.WORKER_ERASURE_SUBJECT)
        try:
            while not stopping.is_set():
                try:
                    msg = await self._subscription.next_msg(timeout=_WAIT_S)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    if stopping.is_set():
                        break
                    raise
                await self._deliver(msg)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()

    async def _deliver(self, msg: Msg) -> None:
        try:
            event = decode_envelope(msg.data)
        except MalformedEvent as exc:
            log.error("dropping a malformed %s: %s", msg.subject, exc)
            return
        if not event.voice_id or not is_valid_owner(event.openid):
            log.error("dropping %s %s: no voice or owner in it", event.type, event.id)
            return
        await self._handler(event.openid, event.voice_id)
