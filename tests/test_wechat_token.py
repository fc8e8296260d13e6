"""The access token to the letter: stable_token only, shared by every gateway instance, one
force_refresh per confirmed invalid token (30 s apart), one retry, never a loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from stack import Stack, serving

from events import names
from events.wechat_token import SharedTokenStore
from ops.client import ApiClient
from ops.services.ports import free_port
from wechat_adapter.app import create_app


@contextlib.asynccontextmanager
async def fresh_gateways(stack: Stack, count: int) -> AsyncIterator[list[str]]:
    """`count` new gateway instances (empty in-process token memo) next to the stack's own."""
    ports = [free_port() for _ in range(count)]
    async with contextlib.AsyncExitStack() as instances:
        for port in ports:
            await instances.enter_async_context(serving(create_app(stack.settings), port))
        yield [f"http://127.0.0.1:{port}" for port in ports]


def token_fetches(stack: Stack, since: int) -> list[dict]:
    """The stable_token request bodies the emulator received after call number `since`."""
    return [c.body for c in stack.emulator.calls[since:] if c.api == "stable_token"]


async def submit_everywhere(
    stack: Stack, urls: list[str], user: ApiClient, voice_id: str, per_url: int
) -> None:
    """Concurrent synthesis submissions (each makes a msgSecCheck call with the access token)."""
    clients = [ApiClient(stack.http, url, token=user.token) for url in urls]
    replies = await asyncio.gather(
        *(client.synthesize(f"第{i}句话", voice_id) for client in clients for i in range(per_url))
    )
    assert [r.status for r in replies] == [202] * len(replies), [r.body for r in replies if r.status != 202]


async def test_instances_share_one_token_fetch(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    await SharedTokenStore(stack.bus.kv(names.WECHAT_BUCKET)).clear()
    async with fresh_gateways(stack, 2) as urls:
        before = len(stack.emulator.calls)
        await submit_everywhere(stack, urls, user, voice["voice_id"], per_url=5)
    assert token_fetches(stack, before) == [
        {"grant_type": "client_credential", "appid": stack.settings.wechat_appid,
         "secret": stack.settings.wechat_secret, "force_refresh": False}
    ]  # fmt: skip
    assert not [c for c in stack.emulator.calls[before:] if c.api == "token"]  # never the racy /cgi-bin/token


async def test_invalidated_token_recovers_with_one_forced_refresh(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    async with fresh_gateways(stack, 2) as urls:
        await submit_everywhere(stack, urls, user, voice["voice_id"], per_url=1)  # both hold the token now
        before = len(stack.emulator.calls)
        stack.emulator.invalidate_tokens()  # e.g. an operator forced a refresh elsewhere
        await submit_everywhere(stack, [*urls, stack.url], user, voice["voice_id"], per_url=4)
        forced = [body for body in token_fetches(stack, before) if body["force_refresh"]]
        assert len(forced) == 1, token_fetches(stack, before)

        # A second invalidation within 30 s must not force again (WeChat would refuse): a plain fetch.
        again = len(stack.emulator.calls)
        stack.emulator.invalidate_tokens()
        await submit_everywhere(stack, urls, user, voice["voice_id"], per_url=2)
        assert [b["force_refresh"] for b in token_fetches(stack, again)] == [False]


async def test_a_rejected_retry_is_not_looped(stack: Stack) -> None:
    """If WeChat keeps refusing the fresh token too, the request fails after one retry."""
    user = await stack.user()
    voice = await stack.ready_voice(user)
    before = len(stack.emulator.calls)
    stack.emulator.script_error("msg_sec_check", 40001, times=5)
    try:
        reply = await user.synthesize("一句话", voice["voice_id"])
    finally:
        stack.emulator.clear_scripts("msg_sec_check")
    assert (reply.status, reply.error_code) == (502, "wechat_unavailable")
    checks = [c for c in stack.emulator.calls[before:] if c.api == "msg_sec_check"]
    assert len(checks) == 2  # the call and its one retry


async def test_daily_quota_is_surfaced(stack: Stack, caplog) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    stack.emulator.script_error("msg_sec_check", 45009)
    reply = await user.synthesize("一句话", voice["voice_id"])
    assert (reply.status, reply.error_code) == (502, "wechat_unavailable")
    assert "45009" in caplog.text
