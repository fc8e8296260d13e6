"""What a view reads off a request: the gateway, the caller, the trace id and a JSON body."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.ids import new_id
from common.logs import bind_trace_id
from wechat_adapter.context import Caller, Gateway
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import JSON_BODY_MAX_BYTES

GATEWAY = web.AppKey("gateway", Gateway)
OWNER = web.RequestKey("owner", str)  # the caller's openid, set by the auth middleware
TRACE_ID = web.RequestKey("trace_id", str)
_TRACE_HEADER = "X-Trace-Id"
_TRACE_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_READ_CHUNK_BYTES = 64 * 1024
# Parsing this much JSON takes well under a millisecond; bigger bodies are parsed in a thread.
_PARSE_ON_LOOP_MAX_BYTES = 64 * 1024


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def owner_of(request: web.Request) -> str:
    return request[OWNER]


def caller_of(request: web.Request) -> Caller:
    """The authenticated caller, as domain code takes it."""
    return Caller(owner=owner_of(request), trace_id=trace_id_of(request))


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or, when the peer is a reverse proxy on this host (the
    deployment's TLS terminator), the last address that proxy appended to X-Forwarded-For.

    Only a loopback peer is trusted to set the header; from anyone else it is the client's own claim.
    """
    peer = request.remote or ""
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded and _is_loopback(peer):
        return forwarded.rsplit(",", 1)[-1].strip() or peer
    return peer


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


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


async def read_json_object(
    request: web.Request, *, max_bytes: int = JSON_BODY_MAX_BYTES, too_large: str = "request_too_large"
) -> dict[str, Any]:
    """The body as a JSON object, or `invalid_json`; the error `too_large` past `max_bytes`.

    The size is decided before anything is parsed: from Content-Length when the client sends one,
    else while reading (a chunked body stops at the first byte over). Large bodies (a base64 voice
    upload) are parsed off the event loop.
    """
    if request.content_type != "application/json":
        raise ApiError("unsupported_media_type", detail=f"content type {request.content_type!r}")
    raw = await read_body(request, max_bytes=max_bytes, too_large=too_large)
    parse = _parse_json_object
    body = await asyncio.to_thread(parse, raw) if len(raw) > _PARSE_ON_LOOP_MAX_BYTES else parse(raw)
    return body


async def read_body(request: web.Request, *, max_bytes: int, too_large: str = "request_too_large") -> bytes:
    """The whole body, or the error `too_large` as soon as it is known to be over `max_bytes`."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(too_large, detail=f"Content-Length {request.content_length} > {max_bytes}")
    body = bytearray()
    while chunk := await request.content.read(min(_READ_CHUNK_BYTES, max_bytes + 1 - len(body))):
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(too_large, detail=f"body over {max_bytes} bytes")
    return bytes(body)


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting exhausts the parser
        raise ApiError("invalid_json", detail=str(exc) or type(exc).__name__) from None
    if not isinstance(body, dict):
        raise ApiError("invalid_json", detail="body is not a JSON object")
    try:
        # A JSON string may hold a lone surrogate ("\\ud800"), which no UTF-8 consumer downstream
        # (WeChat, NATS, S3, the engine) accepts: refuse it here, before any side effect.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError("invalid_request", detail="a string holds a lone surrogate") from None
    return body


def json_response(body: Any, *, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))
