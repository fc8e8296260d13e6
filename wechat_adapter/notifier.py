"""Sends the "synthesis finished" subscription message when a task with `notify: true` ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.msg import Msg

from events import names
from events.consumer import consuming
from events.envelope import Envelope
from events.records import owned_key
from events.task_events import notify_event
from wechat_adapter.context import Gateway
from wechat_adapter.subscribe_message import task_page, template_data
from wechat_adapter.wechat_api import WeChatError

log = logging.getLogger(__name__)

# 43101: the user gave no (more) consent for this template. Retrying can never succeed.
NO_CONSENT = 43101


class Notifier:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, event: Envelope, msg: Msg) -> None:
        gateway = self._gateway
        task = await gateway.state.tasks.get(owned_key(event.openid, event.task_id or ""))
        if task is None or not task.notify:
            await msg.ack()
            return
        settings = gateway.settings
        outcome: dict[str, object] = {"template_id": settings.wechat_template_id}
        try:
            await gateway.wechat.send_subscribe_message(
                touser=task.owner,
                template_id=settings.wechat_template_id,
                page=task_page(task.task_id),
                data=template_data(task),
                miniprogram_state=settings.wechat_miniprogram_state,
            )
        except WeChatError as exc:
            # Refusals (43101 no consent, 47003 bad field, 40003/40037 bad ids) are final: record them.
            outcome |= {"errcode": exc.errcode, "errmsg": exc.errmsg}
            sent = False
        else:
            sent = True
        # WeChatUnavailable propagates: the consumer loop naks and JetStream retries with backoff.
        await gateway.bus.publish(notify_event(task, sent=sent, data=outcome))
        gateway.metrics.notifications.labels("sent" if sent else "failed").inc()
        log.info(
            "task %s: notification %s %s",
            task.task_id,
            "sent" if sent else "failed",
            outcome.get("errcode", ""),
        )
        await msg.ack()


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[None]:
    async with consuming(gateway.bus, names.NOTIFIER_CONSUMER, Notifier(gateway)):
        yield
