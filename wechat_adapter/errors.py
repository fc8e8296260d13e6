"""The API's error vocabulary (CONTRACT §3) and the middleware that renders it.

HTTP statuses are chosen here and in the views only; lower layers raise their own exceptions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

# code -> (HTTP status, message for a toast)
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "请求格式不正确"),
    "invalid_request": (400, "请求参数不正确"),
    "unsupported_media_type": (415, "不支持的请求格式"),
    "unauthorized": (401, "登录已过期，请重新登录"),
    "not_found": (404, "内容不存在"),
    "method_not_allowed": (405, "不支持该操作"),
    "range_not_satisfiable": (416, "请求的音频范围无效"),
    "invalid_code": (400, "登录凭证无效，请重新登录"),
    "login_forbidden": (403, "当前账号存在风险，暂时无法登录"),
    "text_empty": (400, "请输入要合成的文字"),
    "text_too_long": (400, "文字太长了，请删减后再试"),
    "text_rejected": (422, "文字包含不当内容，请修改后再试"),
    "audio_invalid": (400, "无法识别该音频，请重新录制"),
    "audio_too_short": (400, "录音太短了，请至少录制 3 秒"),
    "audio_too_long": (400, "录音太长了，请控制在 30 秒以内"),
    "audio_too_large": (413, "文件太大了，请控制在 5MB 以内"),
    "audio_silent": (400, "没有听到声音，请靠近话筒重新录制"),
    "audio_clipped": (400, "录音声音过大失真了，请离话筒远一点重新录制"),
    "voice_rejected": (422, "该声音未通过审核，无法使用"),
    "idempotency_conflict": (409, "重复提交的内容与之前不一致，请重新提交"),
    "idempotency_in_progress": (409, "相同的请求正在处理中，请稍后再试"),
    "rate_limited": (429, "操作太频繁了，请稍后再试"),
    "overloaded": (503, "当前使用人数较多，请稍后再试"),
    "wechat_unavailable": (502, "微信服务暂时不可用，请稍后再试"),
    "unavailable": (503, "服务暂时不可用，请稍后再试"),
    "internal": (500, "服务开小差了，请稍后再试"),
}


class ApiError(Exception):
    """Raised by views; rendered as `{"error": {"code", "message"}}` with the code's status."""

    def __init__(self, code: str, *, detail: str = "", retry_after_s: int | None = None) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(detail or code)
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return ERRORS[self.code][0]


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
