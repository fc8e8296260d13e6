"""Authentication for /v1/*: a bearer session token, or a signed link on the audio routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from wechat_adapter.auth import TokenClaims
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import LINK_MAX_AGE_S
from wechat_adapter.http.requests import GATEWAY, OWNER

PUBLIC_PATHS = frozenset({"/v1/session"})
# ...except these (method, path) on them, which act on the caller's own session: logging out.
AUTHENTICATED_ON_PUBLIC_PATHS = frozenset({("DELETE", "/v1/session")})
# Routes a client may reach with `?sig=` instead of a header (audio players cannot set headers).
# Route name -> the link kind signed for it; the signed id must match the URL's `{id}`.
LINKED_ROUTES = {"task_audio": "task-audio", "task_stream": "task-stream", "voice_audio": "voice-audio"}
# The session of a request authenticated by its bearer token (absent for a signed link).
SESSION = web.RequestKey("session", TokenClaims)


def bearer_token(request: web.Request) -> str:
    """The token of an `Authorization: Bearer …` header, else ""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _is_public(request: web.Request) -> bool:
    if not request.path.startswith("/v1/"):
        return True
    return (
        request.path in PUBLIC_PATHS and (request.method, request.path) not in AUTHENTICATED_ON_PUBLIC_PATHS
    )


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if _is_public(request):
        return await handler(request)
    gateway = request.app[GATEWAY]
    token = bearer_token(request)
    claims = gateway.tokens.verify(token) if token else None
    # A KV failure here raises `unavailable` (503): a revoked token is never let through unchecked.
    if claims is not None and await gateway.revocations.is_revoked(claims):
        claims = None
    owner = claims.owner if claims is not None else None
    if owner is None and "sig" in request.query:
        kind = LINKED_ROUTES.get(request.match_info.route.name or "")
        signed = gateway.links.verify(request.query["sig"], kind, max_age_s=LINK_MAX_AGE_S) if kind else None
        if signed is not None and signed[1] == request.match_info.get("id"):
            owner = signed[0]
    if owner is None:
        raise ApiError("unauthorized")
    request[OWNER] = owner
    if claims is not None:
        request[SESSION] = claims
    return await handler(request)
