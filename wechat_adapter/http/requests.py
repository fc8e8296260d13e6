"""What a view reads off a request: the gateway, the caller, the trace id and a JSON body."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.ids import new_id
from common.logs import bind_trace_id
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError

GATEWAY = web.AppKey("gateway", Gateway)
OWNER = web.RequestKey("owner", str)  # the caller's openid, set by the auth middleware
TRACE_ID = web.RequestKey("trace_id", str)
_TRACE_HEADER = "X-Trace-Id"
_TRACE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def owner_of(request: web.Request) -> str:
    return request[OWNER]


def caller_of(request: web.Request) -> Caller:
    """The authenticated caller, as domain code takes it."""
    return Caller(owner=owner_of(request), trace_id=trace_id_of(request))


def trace_id_of(request: web.Request) -> str:
    """The caller's trace id if it sent a sane one, else a new one; stable for the request.

    It also tags the request's later log lines (each aiohttp request runs in its own asyncio task).
    """
    if TRACE_ID not in request:
        sent = request.headers.get(_TRACE_HEADER, "")
        request[TRACE_ID] = sent if _TRACE_RE.match(sent) else new_id("tr")
        bind_trace_id(request[TRACE_ID])
    return request[TRACE_ID]


@web.middleware
async def trace_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Give every log line of a request its trace id, from the first one on."""
    trace_id_of(request)
    return await handler(request)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or `invalid_json`."""
    if request.content_type != "application/json":
        raise ApiError("unsupported_media_type", detail=f"content type {request.content_type!r}")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting exhausts the parser
        raise ApiError("invalid_json", detail=str(exc) or type(exc).__name__) from None
    if not isinstance(body, dict):
        raise ApiError("invalid_json", detail="body is not a JSON object")
    return body


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))
