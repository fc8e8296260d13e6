"""Content security for user text: the local word list first, then WeChat msgSecCheck v2.

Every text a user makes us speak or keep (synthesis text, a voice's name and prompt text) passes here
before anything is stored or published. The local gate is free and instant, so it runs first and a
hit never costs a msgSecCheck call. What WeChat's "review" verdict and WeChat being down mean is
policy, read from Settings (TEXT_REVIEW_POLICY, SECURITY_FAIL_OPEN).
"""

from __future__ import annotations

import logging
from enum import IntEnum

from wechat_adapter.context import Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.wechat.api import TextVerdict, WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)


class Scene(IntEnum):
    """msgSecCheck scenes: 1 profile, 2 comment, 3 forum, 4 social log.

    WeChat tunes its verdict to the scene. A voice's name and prompt text describe the user's own
    voice, like profile data: PROFILE. Synthesis text is short free text the user publishes to be
    heard, closest to a comment: COMMENT.
    """

    PROFILE = 1
    COMMENT = 2
    FORUM = 3
    SOCIAL_LOG = 4


async def require_clean_text(gateway: Gateway, *, owner: str, text: str, scene: Scene) -> None:
    """Raise `text_rejected` unless the text passes both gates, `wechat_unavailable` when WeChat is
    down and the policy is to fail closed (the default)."""
    _require_no_listed_word(gateway, owner=owner, text=text)
    verdict = await _wechat_verdict(gateway, owner=owner, text=text, scene=scene)
    if verdict is not None:
        _require_acceptable(gateway, owner=owner, verdict=verdict)


def _require_no_listed_word(gateway: Gateway, *, owner: str, text: str) -> None:
    word = gateway.sensitive_words.find(text)
    if word is not None:
        # The listed word, never the user's text: logs must not become a copy of what we refused.
        log.info("text rejected for %s by the local word list: %r", owner, word)
        raise ApiError("text_rejected", detail="local word list")


async def _wechat_verdict(gateway: Gateway, *, owner: str, text: str, scene: Scene) -> TextVerdict | None:
    """WeChat's verdict, or None when WeChat failed and SECURITY_FAIL_OPEN lets the text through."""
    try:
        verdict = await gateway.wechat.msg_sec_check(openid=owner, content=text, scene=int(scene))
    except (WeChatError, WeChatUnavailable) as exc:
        if gateway.settings.security_fail_open:
            gateway.metrics.wechat_calls.labels("msg_sec_check", "fail_open").inc()
            log.warning("msg_sec_check failed for %s; text allowed (SECURITY_FAIL_OPEN): %s", owner, exc)
            return None
        gateway.metrics.wechat_calls.labels("msg_sec_check", "error").inc()
        log.warning("msg_sec_check failed for %s: %s", owner, exc)
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    gateway.metrics.wechat_calls.labels("msg_sec_check", verdict.suggest).inc()
    return verdict


def _require_acceptable(gateway: Gateway, *, owner: str, verdict: TextVerdict) -> None:
    """`pass` passes; `review` passes only under TEXT_REVIEW_POLICY=allow; anything else is refused."""
    if verdict.suggest == "pass":
        return
    if verdict.suggest == "review" and gateway.settings.text_review_policy == "allow":
        log.info("text allowed for %s despite review verdict (label %s)", owner, verdict.label)
        return
    log.info("text rejected for %s: suggest=%s label=%s", owner, verdict.suggest, verdict.label)
    raise ApiError("text_rejected", detail=f"{verdict.suggest}/{verdict.label}")
