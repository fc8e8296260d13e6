"""Login: a `wx.login` code becomes our bearer token; WeChat's session_key stays here, sealed.

Plain domain code (`views/session.py` parses the body and renders the answer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.owners import is_valid_owner
from events.envelope import utc_now_iso
from events.records import SessionRecord
from wechat_adapter.context import Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.wechat.api import WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)

# jscode2session errcodes -> our error codes
_LOGIN_ERRORS = {
    40029: "invalid_code",
    40163: "invalid_code",
    45011: "rate_limited",
    40226: "login_forbidden",
}
# WeChat's 45011 (too many logins) carries no delay; a minute is what its docs suggest waiting.
_WECHAT_RATE_LIMIT_RETRY_S = 60


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires_in: int  # seconds
    openid: str


async def log_in(gateway: Gateway, code: str) -> Session:
    """Trade a wx.login code for a session: code2session, then the sealed session_key is stored."""
    try:
        login = await gateway.wechat.code_to_session(code)
    except WeChatUnavailable as exc:
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    except WeChatError as exc:
        code_name = _LOGIN_ERRORS.get(exc.errcode, "wechat_unavailable")
        retry_after_s = _WECHAT_RATE_LIMIT_RETRY_S if code_name == "rate_limited" else None
        raise ApiError(code_name, detail=str(exc), retry_after_s=retry_after_s) from exc
    if not is_valid_owner(login.openid):
        raise ApiError("wechat_unavailable", detail="jscode2session returned an unusable openid")
    await gateway.state.sessions.put(
        login.openid,
        SessionRecord(
            owner=login.openid,
            session_key_encrypted=gateway.vault.seal(login.session_key, login.openid),
            unionid=login.unionid,
            updated_at=utc_now_iso(),
        ),
    )
    log.info("session created for %s", login.openid)
    return Session(
        token=gateway.tokens.issue(login.openid), expires_in=gateway.tokens.ttl_s, openid=login.openid
    )
