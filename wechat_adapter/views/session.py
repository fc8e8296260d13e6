"""POST /v1/session: a wx.login code becomes our bearer token; session_key stays here, sealed."""

from __future__ import annotations

import logging

from aiohttp import web

from common.owners import is_valid_owner
from events.envelope import utc_now_iso
from events.records import SessionRecord
from wechat_adapter.errors import ApiError
from wechat_adapter.views.common import gateway_of, json_response, read_json_object
from wechat_adapter.wechat_api import WeChatError, WeChatUnavailable

log = logging.getLogger(__name__)

# jscode2session errcodes -> our error codes
_LOGIN_ERRORS = {
    40029: "invalid_code",
    40163: "invalid_code",
    45011: "rate_limited",
    40226: "login_forbidden",
}
MAX_CODE_CHARS = 128


async def create_session(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    body = await read_json_object(request)
    code = body.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
        raise ApiError("invalid_request", detail="code must be the string from wx.login")
    try:
        login = await gateway.wechat.code_to_session(code.strip())
    except WeChatUnavailable as exc:
        raise ApiError("wechat_unavailable", detail=str(exc)) from exc
    except WeChatError as exc:
        code_name = _LOGIN_ERRORS.get(exc.errcode, "wechat_unavailable")
        raise ApiError(
            code_name, detail=str(exc), retry_after_s=60 if code_name == "rate_limited" else None
        ) from exc
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
    return json_response(
        {
            "token": gateway.tokens.issue(login.openid),
            "expires_in": gateway.tokens.ttl_s,
            "openid": login.openid,
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/session", create_session)
