"""The API description: OpenAPI 3.1 at /openapi.json, public like /healthz."""

from __future__ import annotations

import json

from aiohttp import web

from wechat_adapter.http.requests import GATEWAY
from wechat_adapter.openapi import build_document

# The document never changes while the app runs: built and serialised once, at start-up.
_DOCUMENT_JSON = web.AppKey("openapi_document_json", bytes)


async def _build(app: web.Application) -> None:
    settings = app[GATEWAY].settings
    document = build_document(settings.public_base_url, settings)
    app[_DOCUMENT_JSON] = json.dumps(document, ensure_ascii=False).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_DOCUMENT_JSON], content_type="application/json", charset="utf-8")


def add_routes(app: web.Application) -> None:
    # on_startup runs after the cleanup contexts have started, so the gateway's settings are there.
    app.on_startup.append(_build)
    app.router.add_get("/openapi.json", openapi_json)
