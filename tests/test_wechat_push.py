"""WeChat's message push as it really arrives: plain, compatible and safe modes, JSON and XML,
labels as strings or numbers; a verdict rejects a voice and the tasks waiting on it; and the
login's session_key stays sealed."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from stack import Stack, another_gateway

from events.state import SharedState
from ops.samples import speech_sample
from wechat_adapter.auth import SessionKeyVault
from wechat_emulator.app import EmulatorConfig
from wechat_emulator.push import PushEncoder, to_xml


async def pending_voice(stack: Stack, user) -> tuple[str, str]:
    """A voice whose real verdict is held back for a few seconds; returns (voice_id, trace_id)."""
    stack.emulator.set_media_delay(3.0)
    try:
        upload = await user.upload_voice(speech_sample())
    finally:
        stack.emulator.set_media_delay(0.0)
    assert upload.status == 201, upload.body
    voice = await SharedState(stack.bus).voices.get(user.openid, upload.body["voice_id"])
    assert voice.media_trace_id
    return voice.voice_id, voice.media_trace_id


def verdict_message(stack: Stack, openid: str, trace_id: str, suggest: str, label: Any) -> dict[str, Any]:
    return {
        "ToUserName": "gh_0123456789ab", "FromUserName": openid, "CreateTime": int(time.time()),
        "MsgType": "event", "Event": "wxa_media_check", "appid": stack.settings.wechat_appid,
        "trace_id": trace_id, "version": 2, "errcode": 0, "errmsg": "ok",
        "result": {"suggest": suggest, "label": label},
        "detail": [
            {"strategy": "content_model", "errcode": 0, "suggest": suggest, "label": label, "prob": 90}
        ],
    }  # fmt: skip


def encode_push(stack: Stack, message: dict[str, Any], mode: str, push_format: str):
    """The request WeChat sends under the given console settings (compatible = safe + plaintext)."""
    config = EmulatorConfig(
        appid=stack.settings.wechat_appid, push_token=stack.settings.wechat_push_token,
        push_aes_key="" if mode == "plain" else stack.settings.wechat_push_aes_key,
        push_mode="plain" if mode == "plain" else "safe", push_format=push_format,
    )  # fmt: skip
    request = PushEncoder(config).encode(message)
    if mode != "compatible":
        return request.query, request.body
    # Compatible mode carries the plaintext fields next to Encrypt (msg_signature covers Encrypt only).
    envelope = json.loads(request.body) if push_format == "json" else None
    if envelope is not None:
        body = json.dumps(message | envelope).encode()
    else:
        encrypted = request.body.decode().split("<Encrypt><![CDATA[")[1].split("]]>")[0]
        body = to_xml(message | {"Encrypt": encrypted}).encode()
    return request.query, body


@pytest.mark.parametrize("push_format", ["json", "xml"])
@pytest.mark.parametrize(("mode", "label"), [("plain", 100), ("compatible", "100"), ("safe", "100")])
async def test_each_push_mode_and_format_is_understood(
    stack: Stack, mode: str, push_format: str, label
) -> None:
    async with contextlib.AsyncExitStack() as gateways:
        push_url = f"{stack.url}/wechat/push"
        if mode == "plain":  # only a gateway without an EncodingAESKey takes plaintext (test_push_integrity)
            url, _ = await gateways.enter_async_context(another_gateway(stack, wechat_push_aes_key=""))
            push_url = f"{url}/wechat/push"
        user = await stack.user()
        voice_id, trace_id = await pending_voice(stack, user)
        query, body = encode_push(
            stack, verdict_message(stack, user.openid, trace_id, "pass", label), mode, push_format
        )
        reply = await stack.client().request("POST", push_url, params=query, data=body)
        assert (reply.status, reply.body) == (200, b"success")
        assert (await user.wait_voice(voice_id, timeout_s=2.5))["status"] == "ready"  # before the real push
    await stack.emulator.settle()  # the held-back push arrives as a harmless duplicate


async def test_url_verification_handshake(stack: Stack) -> None:
    result = await stack.emulator.handshake()
    assert result["ok"] is True, result


async def test_risky_verdict_rejects_the_voice_and_its_waiting_tasks(stack: Stack) -> None:
    user = await stack.user()
    stack.emulator.set_media_verdict("risky", "20002")
    try:
        voice_id, _ = await pending_voice(stack, user)
        waiting = [await user.synthesize(f"第{i}句", voice_id) for i in range(2)]
        assert [w.body["status"] for w in waiting] == ["awaiting_review"] * 2
        tasks = [await user.wait_task(w.body["task_id"]) for w in waiting]
    finally:
        stack.emulator.set_media_verdict("pass", "100")
    assert (await user.request("GET", f"/v1/voices/{voice_id}")).body["status"] == "rejected"
    assert [(t["status"], t["error"]["code"]) for t in tasks] == [("rejected", "voice_rejected")] * 2


async def test_session_key_is_sealed_and_never_returned(stack: Stack, caplog) -> None:
    user = await stack.user()
    session = await SharedState(stack.bus).sessions.get(user.openid)
    session_key = SessionKeyVault(stack.settings.session_secret).open(
        session.session_key_encrypted, user.openid
    )
    assert len(session_key) == 24  # WeChat's base64 of 16 bytes
    assert session_key not in session.session_key_encrypted
    assert session_key not in caplog.text
    login = await stack.client().login("again:1")
    assert set(login.body) == {"token", "expires_in", "openid"}
