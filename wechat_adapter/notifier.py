"""Sends the "synthesis finished" subscription message when a task with `notify: true` ends.

One `subscribeMessage.send` per finished task: `tts.synthesis.completed`, or `tts.synthesis.failed`
(which review also publishes for a task it rejects). Every outcome is recorded on the stream, so the
audit log never loses a notification silently:

- sent: `tts.notify.sent` {template_id, attempt, reason?}.
- WeChat refused (any errcode, after the client's own token refresh): `tts.notify.failed`
  {template_id, attempt, errcode, errmsg, field?}, acked, never sent again. 43101 means the user gave
  no (more) consent: one acceptance in `wx.requestSubscribeMessage` is one send, and another attempt
  can never succeed. 47003 names the bad value (`field`, e.g. "thing1"); 40003/40037 a bad openid or
  template. `reason` is the task's error code when it failed or was rejected.
- WeChat unavailable (network, 5xx, -1 through the client's retries within one call): nak with a
  growing delay (`RetryPolicy`: 1, 2, 4 … 60 s) so JetStream redelivers; the delivery that reaches
  `give_up_after` (8 of the consumer's 10) records `tts.notify.failed` {errcode: "unavailable"} and
  acks. The two deliveries left over cover a failure to publish that record.

Delivery is at least once: if WeChat took the message but publishing the outcome or the ack failed,
the redelivery sends it again (the user may see two cards; the outcome event dedupes on its id
`<task_id>.notify`). Sending at most once would need a record written before the call and a lost
notification whenever the process died during it, which is worse for a "your audio is ready" card.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from nats.aio.msg import Msg

from common import vocabulary
from common.config import ConfigError, Settings
from common.logs import log_context
from common.owners import is_valid_owner
from events import names
from events.bus import CONSUMERS, EventBus
from events.consumer import ConsumerLoop, DeadLetter, dead_letter_consumer, event_consumer
from events.envelope import Envelope
from events.retry import RetryPolicy
from events.state import SharedState
from events.task_events import notify_event
from wechat_adapter.context import Gateway
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.wechat.api import WeChatClient, WeChatError, WeChatUnavailable
from wechat_adapter.wechat.subscribe_message import TemplateMapping, task_page

log = logging.getLogger(__name__)

# 43101: the user gave no (more) consent for this template. Retrying can never succeed.
NO_CONSENT = 43101
BAD_ARGUMENT = 47003
UNAVAILABLE = "unavailable"  # the errcode recorded when WeChat could not be reached in time
DEADLETTERED = "deadlettered"  # the errcode recorded when our own side kept failing (a dead letter)
MINIPROGRAM_STATES = vocabulary.MINIPROGRAM_STATES

# 47003's errmsg names the value it refused: "argument invalid! data.thing1.value exceeds limit".
_REFUSED_FIELD = re.compile(r"\bdata\.([a-z_]+\d+)\b|\b(page|miniprogram_state|lang|touser|template_id)\b")
_MAX_DELIVER = next(spec.max_deliver for spec in CONSUMERS if spec.name == names.NOTIFIER_CONSUMER)


# When to try again after WeChat was unavailable: nak after 1, 2, 4 … 60 s; delivery 8 gives up
# (give_up_after must stay below the consumer's max_deliver).
NOTIFY_RETRY = RetryPolicy(first_delay_s=1.0, max_delay_s=60.0, give_up_after=8)


def refused_field(errmsg: str) -> str | None:
    """The template keyword (or request field) a 47003 errmsg names, e.g. "thing1"."""
    match = _REFUSED_FIELD.search(errmsg)
    return None if match is None else match.group(1) or match.group(2)


class Notifier:
    """The notifier consumer's handler; built at start-up, so a bad template mapping stops the gateway."""

    def __init__(
        self,
        settings: Settings,
        *,
        state: SharedState,
        wechat: WeChatClient,
        bus: EventBus,
        metrics: GatewayMetrics,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._mapping = TemplateMapping.from_pairs(settings.wechat_template_fields)
        if settings.wechat_miniprogram_state not in MINIPROGRAM_STATES:
            raise ConfigError("WECHAT_MINIPROGRAM_STATE must be formal, trial or developer")
        self._retry = retry or NOTIFY_RETRY
        if self._retry.give_up_after >= _MAX_DELIVER:
            raise ValueError(
                f"give_up_after={self._retry.give_up_after} leaves no delivery of the {_MAX_DELIVER} "
                "the notifier consumer allows for recording the failure"
            )
        self._settings = settings
        self._state = state
        self._wechat = wechat
        self._bus = bus
        self._metrics = metrics

    @classmethod
    def for_gateway(cls, gateway: Gateway, *, retry: RetryPolicy | None = None) -> Notifier:
        return cls(
            gateway.settings,
            state=gateway.state,
            wechat=gateway.wechat,
            bus=gateway.bus,
            metrics=gateway.metrics,
            retry=retry,
        )

    async def __call__(self, event: Envelope, msg: Msg) -> None:
        with log_context(trace_id=event.trace_id, task_id=event.task_id):
            await self._notify(event, msg)

    async def _notify(self, event: Envelope, msg: Msg) -> None:
        if not event.task_id or not is_valid_owner(event.openid):
            log.error("notifier: %s %s names no task of a valid user; dropping", event.type, event.id)
            await msg.term()
            return
        task = await self._state.tasks.get(event.openid, event.task_id)
        if task is None or not task.notify:
            await msg.ack()
            return
        if not task.status.is_final:
            log.warning(
                "task %s: %s but the task is %s; not notifying", task.task_id, event.type, task.status
            )
            await msg.ack()
            return
        settings = self._settings
        attempt = msg.metadata.num_delivered
        outcome: dict[str, Any] = {"template_id": settings.wechat_template_id, "attempt": attempt}
        if task.error is not None:
            outcome["reason"] = task.error.code
        try:
            # The send (token fetch included, each with bounded retries) may outlast ack_wait.
            await msg.in_progress()
            await self._wechat.send_subscribe_message(
                touser=task.owner,
                template_id=settings.wechat_template_id,
                page=task_page(task.task_id),
                data=self._mapping.data(task),
                miniprogram_state=settings.wechat_miniprogram_state,
                lang=settings.wechat_lang,
            )
        except WeChatUnavailable as exc:
            if not self._retry.gives_up(attempt):
                delay_s = self._retry.delay_s(attempt)
                log.warning(
                    "task %s: notification delivery %d: %s; retrying in %.0f s",
                    task.task_id,
                    attempt,
                    exc,
                    delay_s,
                )
                self._metrics.notifications.labels("retried").inc()
                await msg.nak(delay=delay_s)
                return
            outcome |= {"errcode": UNAVAILABLE, "errmsg": str(exc)}
            sent = False
        except WeChatError as exc:
            outcome |= {"errcode": exc.errcode, "errmsg": exc.errmsg}
            if exc.api != "subscribe_send":
                outcome["api"] = exc.api  # e.g. stable_token refused our appid/secret
            if exc.errcode == BAD_ARGUMENT and (field := refused_field(exc.errmsg)):
                outcome["field"] = field
            sent = False
        else:
            sent = True
        await self._bus.publish(notify_event(task, sent=sent, data=outcome))
        self._metrics.notifications.labels("sent" if sent else "failed").inc()
        log.info(
            "task %s: notification %s on delivery %d%s",
            task.task_id,
            "sent" if sent else "failed",
            attempt,
            "" if sent else f" (errcode {outcome['errcode']})",
        )
        await msg.ack()

    async def dead_letter(self, letter: DeadLetter, msg: Msg) -> None:
        """A finished task whose notification ran out of deliveries (the handler kept failing, e.g.
        NATS or KV trouble): record `tts.notify.failed`, so the audit log says no card was sent."""
        event = letter.event
        task = await self._state.tasks.get(event.openid, event.task_id or "") if event.task_id else None
        if task is None or not task.notify or not is_valid_owner(event.openid):
            await msg.ack()
            return
        outcome: dict[str, Any] = {
            "template_id": self._settings.wechat_template_id,
            "attempt": letter.deliveries,
            "errcode": DEADLETTERED,
            "errmsg": f"gave up after {letter.deliveries} deliveries",
        }
        if task.error is not None:
            outcome["reason"] = task.error.code
        await self._bus.publish(notify_event(task, sent=False, data=outcome))
        self._metrics.notifications.labels("failed").inc()
        log.warning(
            "task %s: notification dead-lettered after %d deliveries", task.task_id, letter.deliveries
        )
        await msg.ack()


def consumer(gateway: Gateway) -> ConsumerLoop[Envelope]:
    """The notifier's consumer loop, for the gateway's supervisor; a bad template mapping raises here."""
    return event_consumer(gateway.bus, names.NOTIFIER_CONSUMER, Notifier.for_gateway(gateway))


def dead_letter_consumer_of(gateway: Gateway) -> ConsumerLoop[DeadLetter]:
    """The notifier's dead letters, for the gateway's supervisor."""
    notifier = Notifier.for_gateway(gateway)
    return dead_letter_consumer(gateway.bus, names.NOTIFIER_DEADLETTER_CONSUMER, notifier.dead_letter)
