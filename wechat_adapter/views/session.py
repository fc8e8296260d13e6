"""/v1/session: POST trades a wx.login code for our bearer token, DELETE revokes it (`login.py`)."""

from __future__ import annotations

from aiohttp import web

from wechat_adapter.errors import ApiError
from wechat_adapter.fields import MAX_CODE_CHARS
from wechat_adapter.http.auth import SESSION, bearer_token
from wechat_adapter.http.requests import client_address, gateway_of, json_response, read_json_object
from wechat_adapter.login import log_in, log_out


async def create_session(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    code = body.get("code")
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CODE_CHARS:
        raise ApiError("invalid_request", detail="code must be the string from wx.login")
    session = await log_in(
        gateway_of(request),
        code.strip(),
        client_address=client_address(request),
        presented_token=bearer_token(request),
    )
    return json_response({"token": session.token, "expires_in": session.expires_in, "openid": session.openid})


async def delete_session(request: web.Request) -> web.Response:
    """Log out: the bearer token of this request is revoked (a signed link cannot reach this route)."""
    await log_out(gateway_of(request), request[SESSION])
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/session", create_session)
    app.router.add_delete("/v1/session", delete_session)
