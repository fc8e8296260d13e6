"""Authentication for /v1/*: a bearer session token, or a signed link on the audio routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from wechat_adapter.errors import ApiError
from wechat_adapter.fields import LINK_MAX_AGE_S
from wechat_adapter.http.requests import GATEWAY, OWNER

PUBLIC_PATHS = frozenset({"/v1/session"})
# Routes a client may reach with `?sig=` instead of a header (audio players cannot set headers).
# Route name -> the link kind signed for it; the signed id must match the URL's `{id}`.
LINKED_ROUTES = {"task_audio": "task-audio", "voice_audio": "voice-audio"}


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if not request.path.startswith("/v1/") or request.path in PUBLIC_PATHS:
        return await handler(request)
    gateway = request.app[GATEWAY]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    owner = gateway.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
    if owner is None and "sig" in request.query:
        kind = LINKED_ROUTES.get(request.match_info.route.name or "")
        signed = gateway.links.verify(request.query["sig"], kind, max_age_s=LINK_MAX_AGE_S) if kind else None
        if signed is not None and signed[1] == request.match_info.get("id"):
            owner = signed[0]
    if owner is None:
        raise ApiError("unauthorized")
    request[OWNER] = owner
    return await handler(request)
