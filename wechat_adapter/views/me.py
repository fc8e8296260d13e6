"""/v1/me: the caller as a person. DELETE erases everything of theirs (`erasure.py`)."""

from __future__ import annotations

from aiohttp import web

from wechat_adapter.erasure import erase_user
from wechat_adapter.http.requests import caller_of, gateway_of


async def delete_me(request: web.Request) -> web.Response:
    """The right to erasure: 204 once every voice, task, object and entry of the caller is gone."""
    await erase_user(gateway_of(request), caller_of(request))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_delete("/v1/me", delete_me)
