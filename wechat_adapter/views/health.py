"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from storage.objects import StorageError
from wechat_adapter.http.requests import gateway_of, json_response

_READY_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when NATS is connected, the S3 bucket answers and every background consumer runs.

    `consumers` names each of the gateway's consumers and tasks (notifier, review, review timeout)
    with whether it is alive: one that died makes the gateway unready, so it is restarted instead of
    silently sending no notifications or applying no verdicts.
    """
    gateway = gateway_of(request)
    consumers = gateway.background.liveness()
    checks = {"nats": gateway.bus.is_connected, "s3": True, "consumers": all(consumers.values())}
    try:
        await asyncio.wait_for(gateway.store.ping(), _READY_TIMEOUT_S)
    except (StorageError, TimeoutError):
        checks["s3"] = False
    ok = all(checks.values())
    return json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks, "consumers": consumers},
        status=200 if ok else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    body = await gateway.metrics.render(gateway.queue.pending)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
