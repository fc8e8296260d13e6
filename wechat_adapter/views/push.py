"""/wechat/push: WeChat's message push. Verify, refuse replays, record as an event, reply `success`.

A verified push is claimed once, by `replay_key`, in KV (the `tts_push_nonces` bucket keeps keys for
twice the staleness window): the first delivery wins on any gateway instance, and the same push again
(same timestamp, nonce and signature) is refused with 403. When KV cannot be asked, the push is
refused with 503 so that WeChat retries it: never let through unchecked. When recording it fails
after the claim, the claim is released, so WeChat's retry is not taken for a replay.
"""

from __future__ import annotations

import contextlib
import logging

import nats.errors
from aiohttp import web

from wechat_adapter.http.requests import gateway_of
from wechat_adapter.review import record_wechat_verdict
from wechat_adapter.wechat.push_security import MAX_BODY_BYTES, PushRejected, PushVerifier, replay_key

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
    nonces = gateway_of(request).state.push_nonces
    key = replay_key(request.query)
    try:
        first = await nonces.claim(key)
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        log.warning("push refused for now: cannot check it is not a replay: %r", exc)
        return web.Response(status=503, text="unavailable")
    if not first:
        log.warning("push refused: a replay (its timestamp, nonce and signature were seen before)")
        return web.Response(status=403, text="forbidden")
    try:
        if message.get("Event") == MEDIA_CHECK_EVENT:
            await record_wechat_verdict(gateway_of(request), message)
        else:
            log.info("push ignored: event %r", message.get("Event") or message.get("MsgType"))
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: a claim left behind expires with the window
            await nonces.release(key)
        raise
    return web.Response(text="success")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wechat/push", verify_url)
    app.router.add_post("/wechat/push", receive)
