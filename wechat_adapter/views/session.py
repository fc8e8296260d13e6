"""POST /v1/session: a wx.login code becomes our bearer token (`wechat_adapter.login`)."""

from __future__ import annotations

from aiohttp import web

from wechat_adapter.errors import ApiError
from wechat_adapter.fields import MAX_CODE_CHARS
from wechat_adapter.http.requests import gateway_of, json_response, read_json_object
from wechat_adapter.login import log_in


async def create_session(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    code = body.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
        raise ApiError("invalid_request", detail="code must be the string from wx.login")
    session = await log_in(gateway_of(request), code.strip())
    return json_response({"token": session.token, "expires_in": session.expires_in, "openid": session.openid})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/session", create_session)
