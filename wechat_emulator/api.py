"""The emulated WeChat server API endpoints, with the documented shapes and error codes.

Every answer is HTTP 200 with a JSON body; an error is `{"errcode", "errmsg"}`. Each call is
recorded first, then delayed by its scripted latency, then answered by a scripted error if one is
queued, and only then handled. The GET endpoints answer `text/plain`, as WeChat's do, so a client
that insists on `application/json` fails here before it fails in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common import vocabulary
from wechat_emulator.codes import WeChatError, new_rid
from wechat_emulator.config import EmulatorConfig
from wechat_emulator.fields import check_value, has_control_chars
from wechat_emulator.records import RecordedCall
from wechat_emulator.state import EMULATOR_KEY, Emulator

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2500  # msgSecCheck's documented limit; longer text is 45002
SCENES = range(1, 5)  # 1 profile, 2 comment, 3 forum, 4 social log
MEDIA_TYPES = (1, 2)  # 1 audio, 2 image
MINIPROGRAM_STATES = vocabulary.MINIPROGRAM_STATES
LANGS = vocabulary.WECHAT_LANGS

Handler = Callable[[Emulator, RecordedCall], Awaitable[dict[str, Any]]]
View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(api: str, method: str, *, content_type: str = "application/json") -> Callable[[Handler], View]:
    """Wrap a handler with recording, latency, method check, scripted errors and error rendering."""

    def wrap(handler: Handler) -> View:
        async def view(request: web.Request) -> web.StreamResponse:
            emulator = request.app[EMULATOR_KEY]
            body_in = await _read_body(request)
            call = RecordedCall(api, request.method, dict(request.query), body_in, time.time())
            emulator.calls.append(call)
            delay_s = emulator.latency_s(api)
            if delay_s:
                await asyncio.sleep(delay_s)
            try:
                if request.method != method:
                    raise WeChatError(43002 if method == "POST" else 43001)
                scripted = emulator.take_scripted_error(api)
                if scripted is not None:
                    raise scripted
                body = await handler(emulator, call)
            except WeChatError as exc:
                body = exc.body()
            call.errcode = int(body.get("errcode", 0))
            log.info(
                "%s %s -> errcode=%d%s",
                request.method,
                api,
                call.errcode,
                f" ({body['errmsg']})" if call.errcode else "",
            )
            text = json.dumps(body, ensure_ascii=False)
            return web.Response(text=text, content_type=content_type, charset="utf-8")

        return view

    return wrap


async def _read_body(request: web.Request) -> Any:
    text = await request.text()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_object(call: RecordedCall) -> dict[str, Any]:
    if not isinstance(call.body, dict):
        raise WeChatError(47001)
    return call.body


def _check_app(config: EmulatorConfig, appid: object, secret: object) -> None:
    if not appid:
        raise WeChatError(41002)
    if appid != config.appid:
        raise WeChatError(40013)
    if not secret:
        raise WeChatError(41004)
    if secret != config.secret:
        raise WeChatError(40125)


def _check_v2_scene(body: dict[str, Any]) -> None:
    """Only content security v2 is emulated: v1 (no `version`) is deprecated."""
    if body.get("version") not in (2, "2"):
        raise WeChatError(40097, "invalid args: version must be 2")
    scene = body.get("scene")
    if not isinstance(scene, int) or isinstance(scene, bool) or scene not in SCENES:
        raise WeChatError(40097, "invalid args: scene must be 1, 2, 3 or 4")


@_endpoint("jscode2session", "GET", content_type="text/plain")
async def jscode2session(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """GET /sns/jscode2session: needs no access token."""
    query = call.query
    _check_app(emulator.config, query.get("appid"), query.get("secret"))
    if query.get("grant_type") != "authorization_code":
        raise WeChatError(40002)
    code = query.get("js_code", "")
    if not code:
        raise WeChatError(41008)
    return emulator.login(code)


@_endpoint("stable_token", "POST")
async def stable_token(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """POST /cgi-bin/stable_token (JSON body only)."""
    body = _json_object(call)
    if body.get("grant_type") != "client_credential":
        raise WeChatError(40002)
    _check_app(emulator.config, body.get("appid"), body.get("secret"))
    force_refresh = body.get("force_refresh", False)
    if not isinstance(force_refresh, bool):
        raise WeChatError(47001)
    token, expires_in = emulator.tokens.stable(force_refresh=force_refresh)
    return {"access_token": token, "expires_in": expires_in}


@_endpoint("token", "GET", content_type="text/plain")
async def classic_token(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """GET /cgi-bin/token: every call revokes the previous token of this pool."""
    query = call.query
    if query.get("grant_type") != "client_credential":
        raise WeChatError(40002)
    _check_app(emulator.config, query.get("appid"), query.get("secret"))
    token, expires_in = emulator.tokens.classic()
    return {"access_token": token, "expires_in": expires_in}


@_endpoint("msg_sec_check", "POST")
async def msg_sec_check(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """POST /wxa/msg_sec_check (v2): verdict at once; scripted words make it review or risky."""
    emulator.tokens.check(call.query.get("access_token"))
    body = _json_object(call)
    _check_v2_scene(body)
    emulator.require_user(body.get("openid"))
    content = body.get("content")
    if not isinstance(content, str):
        raise WeChatError(47001)
    if len(content) > MAX_TEXT_CHARS:
        raise WeChatError(45002)
    extras = [body[k] for k in ("title", "nickname", "signature") if isinstance(body.get(k), str)]
    verdict, word = emulator.judge_text("\n".join([content, *extras]))
    keyword: dict[str, Any] = {"strategy": "keyword", "errcode": 0}
    if word is not None:
        keyword |= {
            "suggest": verdict.suggest,
            "label": verdict.label,
            "level": 20,
            "prob": 90,
            "keyword": word,
        }
    model = {"strategy": "content_model", "errcode": 0, "suggest": "pass", "label": 100, "prob": 90}
    return {
        "errcode": 0,
        "errmsg": "ok",
        "result": {"suggest": verdict.suggest, "label": verdict.label},
        "detail": [model, keyword],
        "trace_id": new_rid(),
    }


@_endpoint("media_check_async", "POST")
async def media_check_async(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """POST /wxa/media_check_async (v2): trace_id now, verdict pushed later."""
    emulator.tokens.check(call.query.get("access_token"))
    body = _json_object(call)
    _check_v2_scene(body)
    if body.get("media_type") not in MEDIA_TYPES:
        raise WeChatError(40097, "invalid args: media_type must be 1 (audio) or 2 (image)")
    media_url = body.get("media_url")
    if not isinstance(media_url, str) or not media_url.startswith(("http://", "https://")):
        raise WeChatError(40097, "invalid args: media_url must be an http(s) URL")
    openid = emulator.require_user(body.get("openid"))
    trace_id = emulator.accept_media_check(openid=openid, media_url=media_url, call=call)
    return {"errcode": 0, "errmsg": "ok", "trace_id": trace_id}


@_endpoint("subscribe_send", "POST")
async def subscribe_send(emulator: Emulator, call: RecordedCall) -> dict[str, Any]:
    """POST /cgi-bin/message/subscribe/send: every field checked against its template type."""
    emulator.tokens.check(call.query.get("access_token"))
    body = _json_object(call)
    if body.get("template_id") != emulator.config.template_id:
        raise WeChatError(40037)
    emulator.require_user(body.get("touser"))
    _check_template_data(emulator.config.template_fields, body.get("data"))
    page = body.get("page")
    if page is not None and (not isinstance(page, str) or has_control_chars(page)):
        raise WeChatError(47003, "argument invalid! page invalid")
    if body.get("miniprogram_state", "formal") not in MINIPROGRAM_STATES:
        raise WeChatError(47003, "argument invalid! miniprogram_state invalid")
    if body.get("lang", "zh_CN") not in LANGS:
        raise WeChatError(47003, "argument invalid! lang invalid")
    return {"errcode": 0, "errmsg": "ok", "msgid": emulator.record_message(body)}


def _check_template_data(template_fields: dict[str, str], data: object) -> None:
    """47003 naming the first field whose key or value breaks the template."""
    if not isinstance(data, dict) or not data:
        raise WeChatError(47003, "argument invalid! data invalid")
    for key, item in data.items():
        field_type = template_fields.get(key)
        if field_type is None:
            raise WeChatError(47003, f"argument invalid! data.{key} not in template")
        value = item.get("value") if isinstance(item, dict) else None
        problem = check_value(field_type, value) if isinstance(value, str) else "invalid"
        if problem is not None:
            raise WeChatError(47003, f"argument invalid! data.{key}.value {problem}")


def add_wechat_routes(app: web.Application) -> None:
    """Mount the WeChat API paths; any method reaches the view so a wrong one gets 43001/43002."""
    app.router.add_route("*", "/sns/jscode2session", jscode2session)
    app.router.add_route("*", "/cgi-bin/stable_token", stable_token)
    app.router.add_route("*", "/cgi-bin/token", classic_token)
    app.router.add_route("*", "/wxa/msg_sec_check", msg_sec_check)
    app.router.add_route("*", "/wxa/media_check_async", media_check_async)
    app.router.add_route("*", "/cgi-bin/message/subscribe/send", subscribe_send)
