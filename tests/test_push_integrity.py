"""Push integrity: with an EncodingAESKey only safe mode is believed, a push is believed once (on any
gateway instance), the nonce check fails closed, the emulator's push credentials never meet real
WeChat, and media-check trace ids stay out of info logs."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import nats.errors
import pytest
from stack import Stack, another_gateway, speech_sample

import wechat_adapter.views.push as push_view
from common.config import EMULATOR_PUSH_AES_KEY, EMULATOR_PUSH_TOKEN, ConfigError, Settings
from events import names
from events.bus import KV_BUCKETS
from events.state import SharedState
from wechat_adapter.app import create_app
from wechat_adapter.wechat.push_security import MAX_CLOCK_SKEW_S, PushRejected, PushVerifier, replay_key
from wechat_emulator.config import EmulatorConfig
from wechat_emulator.push import PushEncoder, PushRequest

OUR_LOGGERS = ("wechat_adapter", "synth_worker", "events", "storage", "common", "ops")


def encoder(settings: Settings, *, mode: str = "safe") -> PushEncoder:
    """WeChat's own push encoding (the emulator's) under these push settings."""
    return PushEncoder(
        EmulatorConfig(
            appid=settings.wechat_appid,
            push_token=settings.wechat_push_token,
            push_aes_key=settings.wechat_push_aes_key,
            push_mode=mode,
        )
    )


def verdict(openid: str, trace_id: str, suggest: str) -> dict[str, Any]:
    return {
        "ToUserName": "gh_000000000000", "FromUserName": openid, "CreateTime": int(time.time()),
        "MsgType": "event", "Event": "wxa_media_check", "trace_id": trace_id, "version": 2,
        "errcode": 0, "errmsg": "ok", "result": {"suggest": suggest, "label": "100"},
    }  # fmt: skip


async def post(stack: Stack, push: PushRequest, base_url: str | None = None) -> tuple[int, str]:
    async with stack.http.post(
        f"{base_url or stack.url}/wechat/push",
        params=push.query,
        data=push.body,
        headers={"Content-Type": push.content_type},
    ) as response:
        return response.status, await response.text()


async def quiet(stack: Stack) -> None:
    """No verdict of an earlier test still to come, no consumer with work in hand: from here on, the
    stream moves only by what this test does."""
    await stack.emulator.settle()
    await stack.settled_seq()


async def pending_voice(stack: Stack, user, *, real_verdict: str = "pass") -> tuple[str, str]:
    """A voice whose real (encrypted) verdict comes a few seconds later; (voice_id, media trace id)."""
    stack.emulator.set_media_delay(3.0)
    stack.emulator.set_media_verdict(real_verdict, "20002" if real_verdict == "risky" else "100")
    try:
        upload = await user.upload_voice(speech_sample())
    finally:
        stack.emulator.set_media_delay(0.0)
        stack.emulator.set_media_verdict("pass", "100")
    assert upload.status == 201, upload.body
    voice = await SharedState(stack.bus).voices.get(user.openid, upload.body["voice_id"])
    assert voice is not None and voice.media_trace_id
    return voice.voice_id, voice.media_trace_id


# --- safe mode only, once a key is configured ----------------------------------------------------------


async def test_plaintext_push_is_refused_and_the_real_verdict_still_decides(stack: Stack) -> None:
    assert stack.settings.wechat_push_aes_key, "the session stack runs in safe mode"
    user = await stack.user()
    await quiet(stack)
    voice_id, trace_id = await pending_voice(stack, user, real_verdict="risky")
    # A validly signed plaintext push: its `signature` covers token, timestamp and nonce, not the body.
    forged = encoder(stack.settings, mode="plain").encode(verdict(user.openid, trace_id, "pass"))
    assert "signature" in forged.query and "msg_signature" not in forged.query
    last_seq = await stack.stream_last_seq()  # the upload's own event is in; the verdict is 3 s away
    assert await post(stack, forged) == (403, "forbidden")
    assert await stack.stream_last_seq() == last_seq, "a refused push published an event"
    voice = await user.wait_voice(voice_id)
    assert voice["status"] == "rejected", voice  # what WeChat said, in the encrypted push
    await stack.emulator.settle()


def test_verifier_with_a_key_accepts_only_safe_mode() -> None:
    config = EmulatorConfig()
    verifier = PushVerifier(token=config.push_token, aes_key=config.push_aes_key, appid=config.appid)
    message = {"Event": "wxa_media_check", "trace_id": "t1", "result": {"suggest": "risky"}}
    plain = PushEncoder(EmulatorConfig(push_mode="plain")).encode(message)
    with pytest.raises(PushRejected, match="safe mode only"):
        verifier.open(plain.query, plain.body)
    # Compatible mode: plaintext fields beside Encrypt. Only the decrypted Encrypt is believed.
    safe = PushEncoder(config).encode(message)
    compatible = json.loads(safe.body) | {"trace_id": "forged", "result": {"suggest": "pass"}}
    opened = verifier.open(safe.query, json.dumps(compatible).encode())
    assert (opened["trace_id"], opened["result"]["suggest"]) == ("t1", "risky")
    # Without a key (plain mode on the console) the plain signature is all there is, and is enough.
    keyless = PushVerifier(token=config.push_token, aes_key="", appid=config.appid)
    assert keyless.open(plain.query, plain.body)["trace_id"] == "t1"


# --- a push is believed once ---------------------------------------------------------------------------


def test_nonces_are_kept_for_the_whole_staleness_window() -> None:
    # A push is accepted while its timestamp is within MAX_CLOCK_SKEW_S of now, either side.
    assert (KV_BUCKETS[names.PUSH_NONCES_BUCKET] or 0) >= 2 * MAX_CLOCK_SKEW_S
    query = {"timestamp": "1", "nonce": "2", "signature": "s", "msg_signature": "m"}
    assert replay_key(query) != replay_key(query | {"nonce": "3"})
    assert replay_key(query) != replay_key(query | {"msg_signature": "n"})


async def test_a_replayed_push_is_refused_on_every_gateway(stack: Stack) -> None:
    user = await stack.user()
    voice_id, trace_id = await pending_voice(stack, user)
    genuine = encoder(stack.settings).encode(verdict(user.openid, trace_id, "pass"))
    assert await post(stack, genuine) == (200, "success")
    assert (await user.wait_voice(voice_id, timeout_s=2.5))["status"] == "ready"  # before the real push
    await quiet(stack)  # the emulator's own push (a fresh nonce) came too, as a harmless duplicate
    last_seq = await stack.stream_last_seq()
    assert await post(stack, genuine) == (403, "forbidden")
    async with another_gateway(stack) as (other_url, _):
        assert await post(stack, genuine, other_url) == (403, "forbidden")
    assert await stack.stream_last_seq() == last_seq, "a replayed push published an event"


async def test_a_nonce_store_failure_refuses_the_push_for_a_retry(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.gateway is not None
    user = await stack.user()
    await quiet(stack)
    voice_id, trace_id = await pending_voice(stack, user)
    push = encoder(stack.settings).encode(verdict(user.openid, trace_id, "pass"))

    async def unreachable(key: str) -> bool:
        raise nats.errors.TimeoutError

    last_seq = await stack.stream_last_seq()
    with monkeypatch.context() as patch:
        patch.setattr(stack.gateway.state.push_nonces, "claim", unreachable)
        assert await post(stack, push) == (503, "unavailable")
    assert await stack.stream_last_seq() == last_seq, "an unchecked push published an event"

    # A failure after the claim releases it: WeChat's retry of the same push is no replay.
    async def failing(gateway, message) -> None:
        raise RuntimeError("the event stream is down")

    with monkeypatch.context() as patch:
        patch.setattr(push_view, "record_wechat_verdict", failing)
        status, _ = await post(stack, push)
        assert status == 500
    assert await post(stack, push) == (200, "success")
    assert (await user.wait_voice(voice_id, timeout_s=2.5))["status"] == "ready"  # before the real push
    await stack.emulator.settle()


# --- the emulator's push credentials never meet real WeChat --------------------------------------------

REAL = {"wechat_api_base": "https://api.weixin.qq.com", "session_secret": "s" * 32}
REAL_PUSH = {"wechat_push_token": "realpushtoken42", "wechat_push_aes_key": "R" * 43}


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"wechat_push_token": EMULATOR_PUSH_TOKEN}, "WECHAT_PUSH_TOKEN"),
        ({"wechat_push_aes_key": EMULATOR_PUSH_AES_KEY}, "WECHAT_PUSH_AES_KEY"),
    ],
)
def test_the_gateway_refuses_the_emulators_push_credentials_against_real_wechat(
    changes: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable} is the WeChat emulator's"):
        create_app(Settings(**REAL, **(REAL_PUSH | changes)))
    # Against the emulator they are what it expects; with the deployment's own values all is well.
    create_app(Settings(**(REAL | {"wechat_api_base": "http://127.0.0.1:8090"}), **(REAL_PUSH | changes)))
    create_app(Settings(**REAL, **REAL_PUSH))
    create_app(Settings(**REAL, wechat_push_token="realpushtoken42", wechat_push_aes_key=""))  # plain mode


# --- trace ids of media checks stay out of info logs ----------------------------------------------------


async def test_media_check_trace_ids_are_not_logged_at_info(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    record = await SharedState(stack.bus).voices.get(user.openid, voice["voice_id"])
    assert record is not None and record.media_trace_id
    ours = [r for r in caplog.records if r.name.startswith(OUR_LOGGERS) and r.levelno >= logging.INFO]
    assert ours, "nothing of ours was logged: the test would prove nothing"
    assert not [r.getMessage() for r in ours if record.media_trace_id in r.getMessage()]
