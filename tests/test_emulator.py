"""The WeChat emulator over real HTTP: documented shapes and error codes, and pushes that a gateway
using wechatpy's own signature check and decryption accepts (so the two sides interoperate)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from common.config import (
    EMULATOR_APPID,
    EMULATOR_PUSH_AES_KEY,
    EMULATOR_PUSH_TOKEN,
    EMULATOR_SECRET,
    EMULATOR_TEMPLATE_ID,
)
from wechat_emulator.app import EMULATOR_KEY, Emulator, EmulatorConfig, create_emulator_app
from wechat_emulator.fields import check_value
from wechat_emulator.tokens import FORCE_REFRESH_PER_DAY, TokenStore

ROOT = Path(__file__).resolve().parents[1]
Serve = Callable[[web.Application], Awaitable[TestServer]]  # the `serve` fixture: start an app on a free port
MEDIA = b"ID3\x03\x00" + bytes(range(256)) * 8  # what the fake gateway serves as a voice sample


@dataclass
class Served:
    """An emulator listening on a real port, and its in-process state."""

    server: TestServer
    emulator: Emulator

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start apps on free ports; every one is closed at teardown, even when the test fails."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
def serve_emulator(serve: Serve) -> Callable[[EmulatorConfig], Awaitable[Served]]:
    async def start(config: EmulatorConfig) -> Served:
        server = await serve(create_emulator_app(config))
        return Served(server, server.app[EMULATOR_KEY])

    return start


@pytest.fixture
async def wechat(serve_emulator: Callable[[EmulatorConfig], Awaitable[Served]]) -> Served:
    return await serve_emulator(EmulatorConfig())


# --- helpers: the calls a gateway makes --------------------------------------------------------------


async def get_json(http: aiohttp.ClientSession, url: str, **params: str) -> dict[str, Any]:
    async with http.get(url, params=params) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def post_json(http: aiohttp.ClientSession, url: str, body: Any, **params: str) -> dict[str, Any]:
    async with http.post(url, json=body, params=params) as resp:
        assert resp.status == 200
        return await resp.json(content_type=None)


async def login(http: aiohttp.ClientSession, wechat: Served, code: str, **override: str) -> dict[str, Any]:
    params = {
        "appid": EMULATOR_APPID,
        "secret": EMULATOR_SECRET,
        "js_code": code,
        "grant_type": "authorization_code",
    } | override
    return await get_json(http, wechat.url("/sns/jscode2session"), **params)


async def stable_token(http: aiohttp.ClientSession, wechat: Served, *, force_refresh: bool = False) -> str:
    body = await post_json(
        http,
        wechat.url("/cgi-bin/stable_token"),
        {
            "grant_type": "client_credential",
            "appid": EMULATOR_APPID,
            "secret": EMULATOR_SECRET,
            "force_refresh": force_refresh,
        },
    )
    assert body["expires_in"] > 0
    return body["access_token"]


async def text_check(
    http: aiohttp.ClientSession, wechat: Served, token: str, openid: str, content: str, **extra: Any
) -> dict[str, Any]:
    body = {"version": 2, "openid": openid, "scene": 2, "content": content} | extra
    return await post_json(http, wechat.url("/wxa/msg_sec_check"), body, access_token=token)


def message(openid: str, **data: str) -> dict[str, Any]:
    values = {
        "thing1": "你的语音已生成",
        "phrase2": "已完成",
        "character_string3": "t_01JD5ZK",
        "time4": "2026-11-24 21:00",
    } | data
    return {
        "touser": openid,
        "template_id": EMULATOR_TEMPLATE_ID,
        "page": "pages/task?id=t_01JD5ZK",
        "data": {key: {"value": value} for key, value in values.items()},
        "miniprogram_state": "developer",
        "lang": "zh_CN",
    }


async def send_message(
    http: aiohttp.ClientSession, wechat: Served, token: str, body: dict[str, Any]
) -> dict[str, Any]:
    return await post_json(http, wechat.url("/cgi-bin/message/subscribe/send"), body, access_token=token)


async def user_and_token(http: aiohttp.ClientSession, wechat: Served, name: str = "alice") -> tuple[str, str]:
    session = await login(http, wechat, f"{name}:{time.monotonic_ns()}")
    return session["openid"], await stable_token(http, wechat)


# --- jscode2session -----------------------------------------------------------------------------------


async def test_code2session_logs_in_the_same_user_for_each_of_their_codes(
    http: aiohttp.ClientSession, wechat: Served
) -> None:
    async with http.get(
        wechat.url("/sns/jscode2session"),
        params={
            "appid": EMULATOR_APPID,
            "secret": EMULATOR_SECRET,
            "js_code": "alice:1",
            "grant_type": "authorization_code",
        },
    ) as resp:
        assert resp.content_type == "text/plain"  # as WeChat: clients must not insist on application/json
        first = await resp.json(content_type=None)
    second = await login(http, wechat, "alice:2")
    other = await login(http, wechat, "bob:1")

    assert first["openid"] == second["openid"] == wechat.emulator.openid_for("alice:9")
    assert other["openid"] != first["openid"]
    assert first["openid"].startswith("o") and len(first["openid"]) == 28
    assert len(base64.b64decode(first["session_key"])) == 16
    assert "errcode" not in first


async def test_code2session_codes_are_single_use(http: aiohttp.ClientSession, wechat: Served) -> None:
    assert "openid" in await login(http, wechat, "carol:1")
    again = await login(http, wechat, "carol:1")
    assert again["errcode"] == 40029
    assert again["errmsg"].startswith("invalid code rid: ")


@pytest.mark.parametrize(
    ("code", "override", "errcode"),
    [
        ("risky:1", {}, 40226),
        ("invalid:1", {}, 40029),
        ("busy:1", {}, -1),
        ("", {}, 41008),
        ("dave:1", {"secret": "wrong"}, 40125),
        ("dave:2", {"appid": "wx0000000000000000"}, 40013),
        ("dave:3", {"grant_type": "client_credential"}, 40002),
    ],
)
async def test_code2session_rejections(
    http: aiohttp.ClientSession, wechat: Served, code: str, override: dict[str, str], errcode: int
) -> None:
    body = await login(http, wechat, code, **override)
    assert body["errcode"] == errcode
    assert "openid" not in body


# --- access tokens ------------------------------------------------------------------------------------


async def test_stable_token_is_reused_until_a_forced_refresh(
    http: aiohttp.ClientSession, wechat: Served
) -> None:
    openid, first = await user_and_token(http, wechat)
    assert await stable_token(http, wechat) == first

    refreshed = await stable_token(http, wechat, force_refresh=True)
    assert refreshed != first
    assert (await text_check(http, wechat, first, openid, "hi"))["errcode"] == 40001
    assert (await text_check(http, wechat, refreshed, openid, "hi"))["errcode"] == 0
    # A second forced refresh within 30 s does not refresh: WeChat hands back the current token.
    assert await stable_token(http, wechat, force_refresh=True) == refreshed
    assert sum(call.api == "stable_token" for call in wechat.emulator.calls) == 4


async def test_classic_token_revokes_its_predecessor_but_not_stable_tokens(
    http: aiohttp.ClientSession, wechat: Served
) -> None:
    openid, stable = await user_and_token(http, wechat)
    params = {"grant_type": "client_credential", "appid": EMULATOR_APPID, "secret": EMULATOR_SECRET}
    old = (await get_json(http, wechat.url("/cgi-bin/token"), **params))["access_token"]
    new = (await get_json(http, wechat.url("/cgi-bin/token"), **params))["access_token"]

    assert (await text_check(http, wechat, old, openid, "hi"))["errcode"] == 40001
    assert (await text_check(http, wechat, new, openid, "hi"))["errcode"] == 0
    assert (await text_check(http, wechat, stable, openid, "hi"))["errcode"] == 0


async def test_invalidated_expired_and_missing_tokens(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    wechat.emulator.expire_tokens()
    assert (await text_check(http, wechat, token, openid, "hi"))["errcode"] == 42001
    token = await stable_token(http, wechat)  # an expired stable token is renewed without force
    wechat.emulator.invalidate_tokens()
    assert (await text_check(http, wechat, token, openid, "hi"))["errcode"] == 40001
    assert (await text_check(http, wechat, "", openid, "hi"))["errcode"] == 41001


async def test_stable_token_rejects_a_get_and_bad_credentials(
    http: aiohttp.ClientSession, wechat: Served
) -> None:
    assert (await get_json(http, wechat.url("/cgi-bin/stable_token")))["errcode"] == 43002
    body = await post_json(
        http,
        wechat.url("/cgi-bin/stable_token"),
        {"grant_type": "client_credential", "appid": EMULATOR_APPID, "secret": "nope"},
    )
    assert body["errcode"] == 40125
    async with http.post(wechat.url("/cgi-bin/stable_token"), data="not json") as resp:
        assert (await resp.json(content_type=None))["errcode"] == 47001


def test_token_store_renews_early_and_limits_forced_refreshes() -> None:
    now = [1000.0]
    store = TokenStore(clock=lambda: now[0])
    first, expires_in = store.stable(force_refresh=False)
    assert expires_in == 7200
    now[0] += 7200 - 299  # inside the last five minutes: a new token, the old one still valid
    renewed, _ = store.stable(force_refresh=False)
    assert renewed != first
    store.check(first)

    for _ in range(FORCE_REFRESH_PER_DAY):
        now[0] += 31
        store.stable(force_refresh=True)
    now[0] += 31
    with pytest.raises(Exception, match="45009"):
        store.stable(force_refresh=True)


# --- msg_sec_check ------------------------------------------------------------------------------------


async def test_msg_sec_check_pass(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    body = await text_check(http, wechat, token, openid, "今天天气很好")
    assert body["errcode"] == 0
    assert body["result"] == {"suggest": "pass", "label": 100}
    assert body["trace_id"] and body["detail"]


async def test_msg_sec_check_scripted_words(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    wechat.emulator.set_text_verdict("赌博", "risky", 20006)
    wechat.emulator.set_text_verdict("广告", "review", 20001)

    assert (await text_check(http, wechat, token, openid, "看广告"))["result"] == {
        "suggest": "review",
        "label": 20001,
    }
    risky = await text_check(http, wechat, token, openid, "广告：在线赌博")
    assert risky["result"] == {"suggest": "risky", "label": 20006}  # the most severe hit wins
    assert {"keyword": "赌博", "strategy": "keyword"}.items() <= risky["detail"][1].items()


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"version": 1}, 40097),
        ({"scene": 5}, 40097),
        ({"openid": "o-never-logged-in"}, 40003),
        ({"content": "字" * 2501}, 45002),
        ({"content": None}, 47001),
    ],
)
async def test_msg_sec_check_rejections(
    http: aiohttp.ClientSession, wechat: Served, change: dict[str, Any], errcode: int
) -> None:
    openid, token = await user_and_token(http, wechat)
    body = {"version": 2, "openid": openid, "scene": 1, "content": "hello"} | change
    answer = await post_json(http, wechat.url("/wxa/msg_sec_check"), body, access_token=token)
    assert answer["errcode"] == errcode
    assert "result" not in answer


# --- subscribeMessage.send ----------------------------------------------------------------------------


async def test_subscribe_send_success(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    body = message(openid, time4="2026年11月24日 21:00")
    answer = await send_message(http, wechat, token, body)
    assert answer["errcode"] == 0 and isinstance(answer["msgid"], int)
    assert wechat.emulator.sent_messages == [body]


@pytest.mark.parametrize(
    ("data", "errmsg"),
    [
        ({"thing1": "这" * 21}, "argument invalid! data.thing1.value exceeds limit"),
        ({"thing1": "第一行\n第二行"}, "argument invalid! data.thing1.value invalid"),
        ({"phrase2": "done"}, "argument invalid! data.phrase2.value invalid"),
        ({"phrase2": "已经完成了啊"}, "argument invalid! data.phrase2.value exceeds limit"),
        ({"character_string3": "任务1"}, "argument invalid! data.character_string3.value invalid"),
        ({"time4": "tomorrow"}, "argument invalid! data.time4.value invalid"),
        ({"amount9": "1"}, "argument invalid! data.amount9 not in template"),
    ],
)
async def test_subscribe_send_names_the_bad_field(
    http: aiohttp.ClientSession, wechat: Served, data: dict[str, str], errmsg: str
) -> None:
    openid, token = await user_and_token(http, wechat)
    answer = await send_message(http, wechat, token, message(openid, **data))
    assert answer["errcode"] == 47003
    assert answer["errmsg"].startswith(errmsg + " rid: ")
    assert wechat.emulator.sent_messages == []


async def test_subscribe_send_rejections(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    unknown_template = message(openid) | {"template_id": "nope"}
    assert (await send_message(http, wechat, token, unknown_template))["errcode"] == 40037
    assert (await send_message(http, wechat, token, message("o-stranger")))["errcode"] == 40003
    state = message(openid) | {"miniprogram_state": "production"}
    assert (await send_message(http, wechat, token, state))["errcode"] == 47003

    wechat.emulator.script_error("subscribe_send", 43101)
    assert (await send_message(http, wechat, token, message(openid)))["errcode"] == 43101
    assert (await send_message(http, wechat, token, message(openid)))["errcode"] == 0  # scripted once
    assert len(wechat.emulator.sent_messages) == 1


@pytest.mark.parametrize(
    ("field_type", "value", "problem"),
    [
        ("time", "21:00", None),
        ("time", "2026-11-24 21:00 ~ 2026-11-24 22:30", None),
        ("time", "2026-02-30 21:00", "invalid"),
        ("time", "25:00", "invalid"),
        ("date", "2026年11月24日", None),
        ("number", "3.14", None),
        ("character_string", "x" * 33, "exceeds limit"),
        ("thing", "", "invalid"),
        ("thing", "ok\x07", "invalid"),
    ],
)
def test_field_rules(field_type: str, value: str, problem: str | None) -> None:
    assert check_value(field_type, value) == problem


# --- media_check_async and its pushes ----------------------------------------------------------------


@dataclass
class FakeGateway:
    """The gateway's side of a push, checked the way ours must: signature first, then decryption."""

    token: str = EMULATOR_PUSH_TOKEN
    aes_key: str = EMULATOR_PUSH_AES_KEY
    fail_first: int = 0  # answer HTTP 500 to this many pushes, to see WeChat retry
    received: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media/voice.mp3", self._media)
        app.router.add_post("/wechat/push", self._push)
        app.router.add_get("/wechat/push", self._handshake)
        return app

    async def _handshake(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            check_signature(self.token, query["signature"], query["timestamp"], query["nonce"])
        except InvalidSignatureException:
            return web.Response(status=403, text="bad signature")
        return web.Response(text=query["echostr"])

    async def _media(self, request: web.Request) -> web.Response:
        return web.Response(body=MEDIA, content_type="audio/mpeg")

    async def _push(self, request: web.Request) -> web.Response:
        query, raw = request.query, await request.text()
        try:
            check_signature(self.token, query["signature"], query["timestamp"], query["nonce"])
        except InvalidSignatureException:
            return web.Response(status=403, text="bad signature")
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500, text="try again")
        is_json = raw.lstrip().startswith("{")  # by the body, not the Content-Type header
        plaintext = raw
        if query.get("encrypt_type") == "aes":
            crypto = WeChatCrypto(self.token, self.aes_key, EMULATOR_APPID)
            envelope = json.loads(raw) if is_json else raw
            plaintext = crypto.decrypt_message(
                envelope, query["msg_signature"], query["timestamp"], query["nonce"]
            )
        event = json.loads(plaintext) if is_json else xml_to_dict(ET.fromstring(plaintext))
        self.received.append({"query": dict(query), "raw": raw, "event": event})
        return web.Response(text="success")


def xml_to_dict(element: ET.Element) -> Any:
    """WeChat push XML as a dict: leaves become text, repeated tags become lists."""
    if len(element) == 0:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in element:
        value = xml_to_dict(child)
        if child.tag in out:
            previous = out[child.tag]
            out[child.tag] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[child.tag] = value
    return out


async def start_gateway_and_emulator(
    serve: Serve, gateway: FakeGateway, **config: Any
) -> tuple[TestServer, Served]:
    gateway_server = await serve(gateway.app())
    push_url = str(gateway_server.make_url("/wechat/push"))
    emulator_server = await serve(create_emulator_app(EmulatorConfig(push_url=push_url, **config)))
    return gateway_server, Served(emulator_server, emulator_server.app[EMULATOR_KEY])


async def media_check(
    http: aiohttp.ClientSession, wechat: Served, media_url: str
) -> tuple[str, dict[str, Any]]:
    openid, token = await user_and_token(http, wechat)
    answer = await post_json(
        http,
        wechat.url("/wxa/media_check_async"),
        {
            "media_url": media_url,
            "media_type": 1,
            "version": 2,
            "scene": 1,
            "openid": openid,
        },
        access_token=token,
    )
    return openid, answer


@pytest.mark.parametrize("push_format", ["json", "xml"])
@pytest.mark.parametrize("push_mode", ["plain", "safe"])
async def test_media_verdict_is_pushed_and_verifiable(
    http: aiohttp.ClientSession, serve: Serve, push_mode: str, push_format: str
) -> None:
    gateway = FakeGateway()
    gateway_server, wechat = await start_gateway_and_emulator(
        serve, gateway, push_mode=push_mode, push_format=push_format
    )
    openid, answer = await media_check(http, wechat, str(gateway_server.make_url("/media/voice.mp3")))
    assert answer["errcode"] == 0
    await wechat.emulator.settle()

    [push] = gateway.received
    event = push["event"]
    assert event["Event"] == "wxa_media_check"
    assert event["MsgType"] == "event"
    assert event["trace_id"] == answer["trace_id"]
    assert event["FromUserName"] == openid
    assert event["appid"] == EMULATOR_APPID
    assert event["ToUserName"].startswith("gh_")
    assert event["result"] == {"suggest": "pass", "label": "100"}
    assert ("encrypt_type" in push["query"]) == (push_mode == "safe")
    assert ("msg_signature" in push["query"]) == (push_mode == "safe")
    assert ("Encrypt" in push["raw"]) == (push_mode == "safe")
    assert ("wxa_media_check" in push["raw"]) == (push_mode == "plain")

    [call] = [c for c in wechat.emulator.calls if c.api == "media_check_async"]
    assert call.details == {"download_status": 200, "download_bytes": len(MEDIA), "download_error": None}
    [attempt] = wechat.emulator.pushes
    assert attempt.delivered and attempt.response_body == "success"


async def test_media_verdict_follows_the_script(http: aiohttp.ClientSession, serve: Serve) -> None:
    gateway = FakeGateway()
    gateway_server, wechat = await start_gateway_and_emulator(serve, gateway)
    wechat.emulator.set_media_verdict("risky", 20002)
    await media_check(http, wechat, str(gateway_server.make_url("/media/voice.mp3")))
    await wechat.emulator.settle()
    event = gateway.received[0]["event"]
    assert event["result"] == {"suggest": "risky", "label": 20002}
    assert event["detail"][0]["suggest"] == "risky"


async def test_failed_download_asks_for_review(http: aiohttp.ClientSession, serve: Serve) -> None:
    gateway = FakeGateway()
    gateway_server, wechat = await start_gateway_and_emulator(serve, gateway)
    await media_check(http, wechat, str(gateway_server.make_url("/media/missing.mp3")))
    await wechat.emulator.settle()

    event = gateway.received[0]["event"]
    assert event["result"]["suggest"] == "review"
    assert event["errcode"] == event["detail"][0]["errcode"] == -1
    [call] = [c for c in wechat.emulator.calls if c.api == "media_check_async"]
    assert call.details["download_status"] == 404


async def test_push_is_retried_and_a_bad_signature_is_refused(
    http: aiohttp.ClientSession, serve: Serve
) -> None:
    gateway = FakeGateway(fail_first=1)
    gateway_server, wechat = await start_gateway_and_emulator(serve, gateway, push_retry_delay_s=0.01)
    media_url = str(gateway_server.make_url("/media/voice.mp3"))
    await media_check(http, wechat, media_url)
    await wechat.emulator.settle()
    assert [p.status for p in wechat.emulator.pushes] == [500, 200]
    assert len(gateway.received) == 1

    impostor = FakeGateway(token="not-the-push-token")
    impostor_server, wechat = await start_gateway_and_emulator(serve, impostor, push_retry_delay_s=0.01)
    await media_check(http, wechat, str(impostor_server.make_url("/media/voice.mp3")))
    await wechat.emulator.settle()
    assert [p.status for p in wechat.emulator.pushes] == [403, 403, 403]
    assert impostor.received == []


async def test_push_url_handshake(http: aiohttp.ClientSession, serve: Serve) -> None:
    _, wechat = await start_gateway_and_emulator(serve, FakeGateway())
    answer = await post_json(http, wechat.url("/_emulator/handshake"), {})
    assert answer["ok"] and answer["status"] == 200

    _, wechat = await start_gateway_and_emulator(serve, FakeGateway(token="not-the-push-token"))
    assert await wechat.emulator.handshake() == {
        "ok": False,
        "status": 403,
        "body": "bad signature",
        "error": None,
    }


async def test_a_verdict_can_be_pushed_again(http: aiohttp.ClientSession, serve: Serve) -> None:
    gateway = FakeGateway()
    gateway_server, wechat = await start_gateway_and_emulator(serve, gateway)
    _, answer = await media_check(http, wechat, str(gateway_server.make_url("/media/voice.mp3")))
    await wechat.emulator.settle()
    async with http.post(wechat.url("/_emulator/repush"), json={"trace_id": answer["trace_id"]}) as resp:
        assert resp.status == 200
    assert [p["event"]["trace_id"] for p in gateway.received] == [answer["trace_id"]] * 2


async def test_media_check_rejections(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    url = wechat.url("/wxa/media_check_async")
    good = {
        "media_url": "http://127.0.0.1:9/v.mp3",
        "media_type": 1,
        "version": 2,
        "scene": 1,
        "openid": openid,
    }
    for bad in ({"media_type": 3}, {"media_url": "ftp://x"}, {"version": 1}):
        assert (await post_json(http, url, good | bad, access_token=token))["errcode"] == 40097
    assert (await post_json(http, url, good, access_token="stale"))["errcode"] == 40001


async def test_shutdown_cancels_pending_checks(http: aiohttp.ClientSession, serve: Serve) -> None:
    gateway = FakeGateway()
    gateway_server, wechat = await start_gateway_and_emulator(
        serve, gateway, media_verdict_delay_s=60, shutdown_grace_s=0.1
    )
    await media_check(http, wechat, str(gateway_server.make_url("/media/voice.mp3")))
    # The app's cleanup gives pending checks a short grace, then cancels them: closing must not
    # wait out the 60 s verdict delay (the bound is far from both, so load cannot make it flaky).
    await asyncio.wait_for(wechat.server.close(), timeout=30)
    assert gateway.received == []


# --- scripting: latency and the HTTP control surface --------------------------------------------------


async def test_scripted_latency(http: aiohttp.ClientSession, wechat: Served) -> None:
    openid, token = await user_and_token(http, wechat)
    wechat.emulator.set_latency("msg_sec_check", 0.2)
    started = time.monotonic()
    assert (await text_check(http, wechat, token, openid, "hi"))["errcode"] == 0
    assert time.monotonic() - started >= 0.2


async def test_control_endpoints(http: aiohttp.ClientSession, wechat: Served) -> None:
    assert (await get_json(http, wechat.url("/healthz")))["status"] == "ok"
    script = {"api": "jscode2session", "errcode": 45011, "times": 2}
    assert (await post_json(http, wechat.url("/_emulator/script"), script)) == {"ok": True}
    assert (await login(http, wechat, "erin:1"))["errcode"] == 45011
    assert (await login(http, wechat, "erin:2"))["errcode"] == 45011
    assert "openid" in await login(http, wechat, "erin:3")

    calls = await get_json(http, wechat.url("/_emulator/calls"))
    assert [c["errcode"] for c in calls if c["api"] == "jscode2session"] == [45011, 45011, 0]
    verdict = {"suggest": "review", "label": "20001"}
    assert await post_json(http, wechat.url("/_emulator/media_verdict"), verdict) == {"ok": True}
    assert await get_json(http, wechat.url("/_emulator/messages")) == []

    async with http.post(wechat.url("/_emulator/script"), json={"api": "nope", "errcode": 1}) as resp:
        assert resp.status == 400
    bad_verdict = {"suggest": "maybe", "label": 1}
    async with http.post(wechat.url("/_emulator/media_verdict"), json=bad_verdict) as resp:
        assert resp.status == 400

    assert await post_json(http, wechat.url("/_emulator/reset"), {}) == {"ok": True}
    assert await get_json(http, wechat.url("/_emulator/calls")) == []
    assert "openid" in await login(http, wechat, "erin:1")  # used codes were forgotten too

    # A user the gateway knows without a login (a test-made session) can be declared.
    frank = (await post_json(http, wechat.url("/_emulator/users"), {"code": "frank"}))["openid"]
    assert frank == wechat.emulator.openid_for("frank:1")
    token = await stable_token(http, wechat)
    assert (await text_check(http, wechat, token, frank, "hi"))["errcode"] == 0


async def test_runs_as_a_process_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wechat_emulator",
        env={"EMULATOR_PORT": str(port), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    assert (await resp.json())["appid"] == EMULATOR_APPID
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the emulator process never answered /healthz")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
        assert process.returncode == 0, stderr.decode()
        assert b"WeChat emulator for" in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
