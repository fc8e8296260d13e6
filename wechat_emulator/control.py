"""Control endpoints under `/_emulator/`: the scripting surface for users outside the process.

`make up` and subprocess tests cannot touch the `Emulator` object, so each scripting method has
an HTTP twin here. A bad request is answered 400 `{"error": …}`; these are not WeChat paths.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wechat_emulator.state import EMULATOR_KEY, Emulator

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequest(Exception):
    """The control request is malformed; answered with HTTP 400."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda obj: json.dumps(obj, ensure_ascii=False))


def _control(action: Callable[[Emulator, dict[str, Any]], Awaitable[Any]]) -> View:
    """Parse the JSON body (GET: none), run `action`, and answer its result or a 400."""

    async def view(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = {}
        if request.method == "POST" and request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return _json({"error": "body must be JSON"}, 400)
            if not isinstance(body, dict):
                return _json({"error": "body must be a JSON object"}, 400)
        try:
            return _json(await action(request.app[EMULATOR_KEY], body))
        except (_BadRequest, ValueError) as exc:  # ValueError: the Emulator refused the values
            return _json({"error": f"{type(exc).__name__}: {exc}"}, 400)

    return view


def _field(body: dict[str, Any], name: str, kind: Any, default: Any = None) -> Any:
    """`body[name]` checked against `kind` (never a bool); `default` when absent, if one is given."""
    if name not in body and default is not None:
        return default
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _BadRequest(f"{name!r} is required and must be {kind}")
    return value


async def _healthz(emulator: Emulator, body: dict[str, Any]) -> Any:
    return {"status": "ok", "appid": emulator.config.appid}


async def _calls(emulator: Emulator, body: dict[str, Any]) -> Any:
    return [dataclasses.asdict(call) for call in emulator.calls]


async def _messages(emulator: Emulator, body: dict[str, Any]) -> Any:
    return emulator.sent_messages


async def _pushes(emulator: Emulator, body: dict[str, Any]) -> Any:
    return [dataclasses.asdict(push) | {"delivered": push.delivered} for push in emulator.pushes]


async def _script(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.script_error(
        _field(body, "api", str),
        _field(body, "errcode", int),
        _field(body, "errmsg", str, ""),
        _field(body, "times", int, 1),
    )
    return {"ok": True}


async def _latency(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.set_latency(_field(body, "api", str), float(_field(body, "seconds", int | float)))
    return {"ok": True}


async def _text_verdict(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.set_text_verdict(
        _field(body, "word", str), _field(body, "suggest", str), _field(body, "label", int)
    )
    return {"ok": True}


async def _media_verdict(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.set_media_verdict(_field(body, "suggest", str), _field(body, "label", int | str))
    return {"ok": True}


async def _invalidate_tokens(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.invalidate_tokens()
    return {"ok": True}


async def _expire_tokens(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.expire_tokens()
    return {"ok": True}


async def _repush(emulator: Emulator, body: dict[str, Any]) -> Any:
    trace_id = _field(body, "trace_id", str)
    if not await emulator.repush(trace_id):
        raise _BadRequest(f"no verdict decided for trace_id {trace_id!r}")
    return {"ok": True}


async def _handshake(emulator: Emulator, body: dict[str, Any]) -> Any:
    return await emulator.handshake()


async def _add_user(emulator: Emulator, body: dict[str, Any]) -> Any:
    return {"openid": emulator.add_user(_field(body, "code", str))}


async def _reset(emulator: Emulator, body: dict[str, Any]) -> Any:
    emulator.reset()
    return {"ok": True}


def add_control_routes(app: web.Application) -> None:
    """Mount `/healthz` and the `/_emulator/` scripting endpoints."""
    app.router.add_get("/healthz", _control(_healthz))
    app.router.add_get("/_emulator/calls", _control(_calls))
    app.router.add_get("/_emulator/messages", _control(_messages))
    app.router.add_get("/_emulator/pushes", _control(_pushes))
    app.router.add_post("/_emulator/script", _control(_script))
    app.router.add_post("/_emulator/latency", _control(_latency))
    app.router.add_post("/_emulator/text_verdict", _control(_text_verdict))
    app.router.add_post("/_emulator/media_verdict", _control(_media_verdict))
    app.router.add_post("/_emulator/invalidate_tokens", _control(_invalidate_tokens))
    app.router.add_post("/_emulator/expire_tokens", _control(_expire_tokens))
    app.router.add_post("/_emulator/repush", _control(_repush))
    app.router.add_post("/_emulator/users", _control(_add_user))
    app.router.add_post("/_emulator/handshake", _control(_handshake))
    app.router.add_post("/_emulator/reset", _control(_reset))
