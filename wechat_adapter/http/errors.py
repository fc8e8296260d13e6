"""Every failure leaves the gateway as the API's error JSON, with the code's status."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from wechat_adapter.errors import ERRORS, ApiError

log = logging.getLogger(__name__)


def error_response(code: str, *, retry_after_s: int | None = None) -> web.Response:
    status, message = ERRORS[code]
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return web.json_response(
        {"error": {"code": code, "message": message}},
        status=status,
        headers=headers,
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


_HTTP_STATUS_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "audio_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure leaves as the contract's error JSON; unexpected ones are logged once, as `internal`."""
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.path, exc.code, exc.detail)
        retry_after = exc.retry_after_s
        if retry_after is None and exc.status in (429, 503):
            retry_after = 5
        return error_response(exc.code, retry_after_s=retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_STATUS_CODES.get(exc.status, "invalid_request" if exc.status < 500 else "internal")
        response = error_response(code)
        if "Allow" in exc.headers:  # a 405 must say which methods the resource has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response("internal")
