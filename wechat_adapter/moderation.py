"""Content security for user text: WeChat msgSecCheck v2 with the user's openid."""

from __future__ import annotations

import logging
from enum import IntEnum

from wechat_adapter.context import Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.wechat_api import WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)


class Scene(IntEnum):
    """msgSecCheck scenes: 1 profile, 2 comment, 3 forum, 4 social log."""

    PROFILE = 1
    COMMENT = 2
    FORUM = 3
    SOCIAL_LOG = 4


async def require_clean_text(gateway: Gateway, *, owner: str, text: str, scene: Scene) -> None:
    """Raise `text_rejected` unless WeChat passes the text; fail closed when WeChat is down."""
    try:
        verdict = await gateway.wechat.msg_sec_check(openid=owner, content=text, scene=int(scene))
    except (WeChatError, WeChatUnavailable) as exc:
        gateway.metrics.wechat_calls.labels("msg_sec_check", "error").inc()
        log.warning("msg_sec_check failed for %s: %s", owner, exc)
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    gateway.metrics.wechat_calls.labels("msg_sec_check", verdict.suggest).inc()
    if verdict.suggest != "pass":
        log.info("text rejected for %s: suggest=%s label=%s", owner, verdict.suggest, verdict.label)
        raise ApiError("text_rejected", detail=f"{verdict.suggest}/{verdict.label}")
