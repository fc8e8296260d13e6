"""The WeChat error codes the emulator answers with, and the exception that carries one to a response.

Messages follow WeChat's English `errmsg` texts, and every error gets a ` rid: …` suffix as the
real server adds one: clients must branch on `errcode`, never on the exact `errmsg`.
"""

from __future__ import annotations

import secrets
from typing import Any

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40029: "invalid code",
    40037: "invalid template_id",
    40097: "invalid args",
    40125: "invalid appsecret",
    40226: "code blocked",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43101: "user refuse to accept the msg",
    45002: "content size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit mustslower retry next minute",
    47001: "data format error",
    47003: "argument invalid!",
}


class WeChatError(Exception):
    """An answer with a non-zero errcode; the endpoint wrapper turns it into the JSON body."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        self.errcode = errcode
        self.errmsg = errmsg or ERRMSG.get(errcode, "error")
        super().__init__(f"errcode {errcode}: {self.errmsg}")

    def body(self) -> dict[str, Any]:
        """The HTTP 200 body WeChat sends for this error."""
        return {"errcode": self.errcode, "errmsg": f"{self.errmsg} rid: {new_rid()}"}


def new_rid() -> str:
    """A request id shaped like WeChat's (`6683da8d-5761cfb6-42f636c2`); trace ids share the shape."""
    return "-".join(secrets.token_hex(4) for _ in range(3))
