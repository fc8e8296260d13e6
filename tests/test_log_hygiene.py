"""No secret, token or session_key in any log line of ours, even at DEBUG through a whole flow."""

from __future__ import annotations

import logging

import pytest
from stack import Stack

from events import names
from events.state import SharedState
from events.wechat_token import SharedTokenStore
from wechat_adapter.auth import SessionKeyVault

# Our packages; the emulator (it plays WeChat) and aiohttp's access log of test servers are not ours.
OUR_LOGGERS = ("wechat_adapter", "synth_worker", "events", "storage", "common", "ops")


async def test_a_whole_flow_logs_no_secret(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    submitted = await user.synthesize("日志里不能有秘密", voice["voice_id"], notify=True)
    task = await user.wait_task(submitted.body["task_id"])
    await user.request("GET", task["audio_url"])

    session = await SharedState(stack.bus).sessions.get(user.openid)
    vault = SessionKeyVault(stack.settings.session_secret)
    access_token = (await SharedTokenStore(stack.bus.kv(names.WECHAT_BUCKET)).get()).value
    settings = stack.settings
    secrets = {
        "bearer token": user.token,
        "session_key": vault.open(session.session_key_encrypted, user.openid),
        "access token": access_token,
        "SESSION_SECRET": settings.session_secret,
        "WECHAT_SECRET": settings.wechat_secret,
        "WECHAT_PUSH_TOKEN": settings.wechat_push_token,
        "WECHAT_PUSH_AES_KEY": settings.wechat_push_aes_key,
        "S3_SECRET_KEY": settings.s3_secret_key,
        "audio link signature": task["audio_url"].partition("sig=")[2],
    }
    ours = [r for r in caplog.records if r.name.startswith(OUR_LOGGERS)]  # not wechat_emulator's
    assert ours, "the flow logged nothing of ours: the test would prove nothing"
    lines = "\n".join(r.getMessage() + (r.exc_text or "") for r in ours)
    leaked = [name for name, value in secrets.items() if value and value in lines]
    assert leaked == []
