"""Login: a `wx.login` code becomes our bearer token; WeChat's session_key stays here, sealed.

Plain domain code (`views/session.py` parses the body and renders the answer).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from common.owners import is_valid_owner
from events.envelope import utc_now_iso
from events.records import SessionRecord
from events.state import RateLimiter
from wechat_adapter.auth import TokenClaims
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
# A wx.login code is single-use: a client repeating one is broken or hostile. Real codes are 32
# characters; longer ones are counted by their first 32, so padding cannot make a code "new".
LOGINS_PER_CODE_PER_MINUTE = 3
LOGIN_CODE_PREFIX_CHARS = 32
# WeChat's 45011 (too many logins) carries no delay; a minute is what its docs suggest waiting.
_WECHAT_RATE_LIMIT_RETRY_S = 60


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    expires_in: int  # seconds
    openid: str


async def log_in(gateway: Gateway, code: str, *, client_address: str, presented_token: str = "") -> Session:
    """Trade a wx.login code for a session: code2session, then the sealed session_key is stored.

    Logins are limited before WeChat is asked (each one is a jscode2session call, and WeChat limits
    those per appid): per client address, and per code, since a wx.login code is single-use and a
    client repeating one is broken or hostile.

    A login WeChat refuses as high-risk (40226, `login_forbidden`) revokes every session of that user,
    but WeChat's answer names no openid (only a successful jscode2session does), so the user is known
    only from a still-valid bearer token sent with the login (`presented_token`, its Authorization
    header). Without one there is nobody to revoke; the refused login creates no session either way.
    The mini program in miniprogram/ logs in only once it holds no valid token, so today it sends
    none: its stale sessions then end by expiry, or by the next refused login that does carry one.
    """
    await _limit(gateway.state.login_rate_by_address, client_address, gateway.settings.logins_per_minute)
    await _limit(gateway.state.login_rate_by_code, code[:LOGIN_CODE_PREFIX_CHARS], LOGINS_PER_CODE_PER_MINUTE)
    try:
        login = await gateway.wechat.code_to_session(code)
    except WeChatUnavailable as exc:
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    except WeChatError as exc:
        code_name = _LOGIN_ERRORS.get(exc.errcode, "wechat_unavailable")
        if code_name == "login_forbidden":
            await _revoke_presented(gateway, presented_token)
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


async def log_out(gateway: Gateway, session: TokenClaims) -> None:
    """Revoke the caller's session: its token is refused from now on (on other instances within
    `auth.REVOCATION_CACHE_S`); the user's other sessions stay."""
    await gateway.revocations.revoke(session)
    log.info("session logged out for %s", session.owner)


async def _revoke_presented(gateway: Gateway, presented_token: str) -> None:
    claims = gateway.tokens.verify(presented_token) if presented_token else None
    if claims is None:
        log.info("login refused as high-risk; no valid token came with it, so no session to revoke")
        return
    await gateway.revocations.revoke_all(claims.owner)
    log.warning("login refused as high-risk for %s: every session of theirs revoked", claims.owner)


async def _limit(limiter: RateLimiter, value: str, per_minute: int) -> None:
    # Keyed by a hash: addresses and codes hold characters a KV key cannot, and need not be stored.
    who = hashlib.sha256(value.encode()).hexdigest()[:32]
    retry_after_s = await limiter.hit(who, per_minute)
    if retry_after_s is not None:
        raise ApiError("rate_limited", detail="too many logins", retry_after_s=math.ceil(retry_after_s))
