"""CORS for the configured H5 origins only. The mini program needs none (it is not a browser page),
and an API that answered any origin would let any website drive a logged-in user's session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Trace-Id, Range"
_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
_EXPOSE_HEADERS = "Retry-After, Content-Range, Accept-Ranges, X-Audio-Sample-Rate, X-Task-Status"
_PREFLIGHT_MAX_AGE_S = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_cors(app: web.Application, origins: Iterable[str]) -> None:
    """Answer preflights and label responses for `origins`; with none configured, add nothing."""
    allowed = frozenset(origins)
    if not allowed:
        return

    @web.middleware
    async def preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if not (is_preflight and request.headers.get("Origin") in allowed):
            return await handler(request)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": _ALLOW_METHODS,
            "Access-Control-Allow-Headers": _ALLOW_HEADERS,
            "Access-Control-Max-Age": str(_PREFLIGHT_MAX_AGE_S),
        })  # fmt: skip

    async def label(request: web.Request, response: web.StreamResponse) -> None:
        # on_response_prepare runs before headers go out, for streams (SSE) as well as plain replies.
        origin = request.headers.get("Origin")
        if origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(label)
