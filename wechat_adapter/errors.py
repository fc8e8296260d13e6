"""The API's error vocabulary: every code a client may see, its HTTP status and its toast message.

Domain code raises `ApiError(code)`; `wechat_adapter.http.errors` renders it as
`{"error": {"code", "message"}}`. The table is also what `/openapi.json` lists, so a code exists
exactly when it is here.
"""

from __future__ import annotations

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
    "consent_required": (400, "请先确认已获得声音主人的同意"),
    "audio_invalid": (400, "无法识别该音频，请重新录制"),
    "audio_too_short": (400, "录音太短了，请至少录制 3 秒"),
    "audio_too_long": (400, "录音太长了，请控制在 30 秒以内"),
    "audio_too_large": (413, "文件太大了，请控制在 5MB 以内"),
    "audio_silent": (400, "没有听到声音，请靠近话筒重新录制"),
    "audio_clipped": (400, "录音声音过大失真了，请离话筒远一点重新录制"),
    "request_too_large": (413, "请求内容太大了"),
    "voice_limit_reached": (409, "声音数量已达上限，请先删除不用的声音"),
    "voice_rejected": (422, "该声音未通过审核，无法使用"),
    "idempotency_conflict": (409, "重复提交的内容与之前不一致，请重新提交"),
    "idempotency_in_progress": (409, "相同的请求正在处理中，请稍后再试"),
    "rate_limited": (429, "操作太频繁了，请稍后再试"),
    "too_many_streams": (429, "打开的页面太多了，请关闭一些再试"),
    "overloaded": (503, "当前使用人数较多，请稍后再试"),
    "wechat_unavailable": (502, "微信服务暂时不可用，请稍后再试"),
    "unavailable": (503, "服务暂时不可用，请稍后再试"),
    "internal": (500, "服务开小差了，请稍后再试"),
}


class ApiError(Exception):
    """Raised by the gateway's code; rendered as `{"error": {"code", "message"}}` with the code's status."""

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
