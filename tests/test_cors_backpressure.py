"""CORS answers only the configured H5 origins; a queue deeper than its bound turns into 503s."""

from __future__ import annotations

import dataclasses

from stack import Stack, serving

from ops.client import ApiClient
from ops.services.ports import free_port
from wechat_adapter.app import create_app

H5_ORIGIN = "https://h5.example.com"


async def test_cors_only_for_configured_origins(stack: Stack) -> None:
    settings = dataclasses.replace(stack.settings, cors_origins=(H5_ORIGIN,))
    user = await stack.user()
    port = free_port()
    async with serving(create_app(settings), port):
        h5 = ApiClient(stack.http, f"http://127.0.0.1:{port}", token=user.token)
        allowed = await h5.request("GET", "/v1/presets", headers={"Origin": H5_ORIGIN})
        assert allowed.headers["Access-Control-Allow-Origin"] == H5_ORIGIN
        assert "Origin" in allowed.headers["Vary"]

        preflight = await h5.request("OPTIONS", "/v1/syntheses", headers={
            "Origin": H5_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        })  # fmt: skip
        assert preflight.status == 204
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

        # An error answer carries the header too, so the page can show its message.
        missing = await h5.request("GET", "/v1/syntheses/t_unknown", headers={"Origin": H5_ORIGIN})
        assert (missing.status, missing.headers["Access-Control-Allow-Origin"]) == (404, H5_ORIGIN)

        foreign = await h5.request("GET", "/v1/presets", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in foreign.headers
        foreign_preflight = await h5.request("OPTIONS", "/v1/syntheses", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert "Access-Control-Allow-Origin" not in foreign_preflight.headers

    # The stack's gateway has no origins configured: no CORS at all.
    plain = await user.request("GET", "/v1/presets", headers={"Origin": H5_ORIGIN})
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_a_full_queue_answers_overloaded(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    before = await stack.settled_seq()
    full = dataclasses.replace(stack.settings, queue_max_pending=0)  # any depth is too deep
    port = free_port()
    async with serving(create_app(full), port):
        reply = await ApiClient(stack.http, f"http://127.0.0.1:{port}", token=user.token).synthesize(
            "排队的人太多了", voice["voice_id"]
        )
    assert (reply.status, reply.error_code) == (503, "overloaded")
    assert int(reply.headers["Retry-After"]) > 0
    assert await stack.stream_last_seq() == before
