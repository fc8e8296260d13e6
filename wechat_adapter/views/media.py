"""Serving stored audio from S3 with HTTP Range support (players seek; iOS insists on ranges)."""

from __future__ import annotations

from aiohttp import web

from storage.objects import ObjectNotFound, StorageError
from wechat_adapter.errors import ApiError
from wechat_adapter.http.errors import error_response
from wechat_adapter.http.requests import gateway_of


async def serve_object(request: web.Request, key: str, *, content_type: str | None = None) -> web.Response:
    """The object's bytes, or the requested byte range as 206; 416 for a range past the end."""
    store = gateway_of(request).store
    try:
        requested = request.http_range
    except ValueError:
        requested = slice(None, None)  # an unparseable Range header is ignored, as RFC 9110 allows
    try:
        info = await store.stat(key)
        start, stop = _resolve_range(requested, info.size_bytes)
        if start is None:
            response = error_response("range_not_satisfiable")
            response.headers["Content-Range"] = f"bytes */{info.size_bytes}"
            return response
        partial = (start, stop) != (0, info.size_bytes)
        chunk = await store.get_range(key, start, stop - start) if stop > start else None
    except ObjectNotFound:
        raise ApiError("not_found", detail=key) from None
    except StorageError as exc:
        raise ApiError("unavailable", detail=str(exc)) from exc
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if partial:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{info.size_bytes}"
    return web.Response(
        status=206 if partial else 200,
        body=chunk.data if chunk else b"",
        headers=headers,
        content_type=content_type or info.content_type,
    )


def _resolve_range(requested: slice, size: int) -> tuple[int | None, int]:
    """[start, stop) for a Range slice as aiohttp parses it; (None, 0) when unsatisfiable."""
    start, stop = requested.start, requested.stop
    if start is None and stop is None:
        return 0, size
    if start is not None and start < 0:  # suffix range: the last N bytes
        return max(size + start, 0), size
    start = start or 0
    stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        return None, 0
    return start, stop
