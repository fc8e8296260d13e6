"""/wechat/push: WeChat's message push. Verify, record as an event, reply `success` at once."""

from __future__ import annotations

import logging

from aiohttp import web

from wechat_adapter.http.requests import gateway_of
from wechat_adapter.review import record_wechat_verdict
from wechat_adapter.wechat.push_security import MAX_BODY_BYTES, PushRejected, PushVerifier

log = logging.getLogger(__name__)

MEDIA_CHECK_EVENT = "wxa_media_check"


def _verifier(request: web.Request) -> PushVerifier:
    return gateway_of(request).push_verifier


async def verify_url(request: web.Request) -> web.Response:
    try:
        echostr = _verifier(request).verify_url(request.query)
    except PushRejected as exc:
        log.warning("push URL verification refused: %s", exc)
        return web.Response(status=403, text="forbidden")
    return web.Response(text=echostr)


async def _read_body(request: web.Request) -> bytes:
    """The whole body, or its first MAX_BODY_BYTES + 1 bytes (enough for the verifier to refuse it).

    `StreamReader.read(n)` returns whatever has arrived so far, so one call can cut a body in two.
    """
    body = bytearray()
    while len(body) <= MAX_BODY_BYTES:
        chunk = await request.content.read(MAX_BODY_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def receive(request: web.Request) -> web.Response:
    """Only verified pushes become events; the review consumer does the work after we reply."""
    body = await _read_body(request)
    try:
        message = _verifier(request).open(request.query, body)
    except PushRejected as exc:
        log.warning("push refused: %s", exc)
        return web.Response(status=403, text="forbidden")
    if message.get("Event") == MEDIA_CHECK_EVENT:
        await record_wechat_verdict(gateway_of(request), message)
    else:
        log.info("push ignored: event %r", message.get("Event") or message.get("MsgType"))
    return web.Response(text="success")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wechat/push", verify_url)
    app.router.add_post("/wechat/push", receive)
