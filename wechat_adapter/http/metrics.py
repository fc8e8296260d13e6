"""Request latency by route and status, into the gateway's metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from wechat_adapter.metrics import GatewayMetrics

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def metrics_middleware(metrics: GatewayMetrics) -> Callable:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            metrics.http_seconds.labels(request.method, name, str(status)).observe(
                time.perf_counter() - started
            )

    return observe
