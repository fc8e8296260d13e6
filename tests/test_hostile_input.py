"""Hostile input at the HTTP edge that the rejection corpus does not already cover: a compressed
"decompression bomb" disguised as a recording, and enormous headers."""

from __future__ import annotations

import io

import av
import numpy as np
from stack import Stack
from test_rejections import nothing_changed, quiet_stream

BOMB_MINUTES = 5  # five times the 60 s decoding limit


def silent_opus(minutes: int) -> bytes:
    """Minutes of silence as Ogg/Opus at 6 kbit/s: a small file that decodes to a lot of audio."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=16000, layout="mono")
        stream.bit_rate = 6000
        second = np.zeros((1, 16000), dtype=np.int16)
        for _ in range(minutes * 60):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


async def test_a_compressed_bomb_is_refused_without_decoding_it_all(stack: Stack) -> None:
    bomb = silent_opus(BOMB_MINUTES)
    assert len(bomb) < stack.settings.upload_max_bytes  # it passes the size limit: decoding must stop it
    user = await stack.user()
    await quiet_stream(stack)  # earlier tests' tasks may still be finishing: their events are not ours
    async with nothing_changed(stack, user):
        reply = await user.upload_voice(bomb, filename="voice.m4a")
        assert (reply.status, reply.error_code) == (400, "audio_too_long")


async def test_enormous_headers_are_refused_and_the_gateway_carries_on(stack: Stack) -> None:
    user = await stack.user()
    refused = await user.request("GET", "/v1/presets", headers={"X-Junk": "x" * 100_000})
    assert refused.status in (400, 431)
    assert (await user.request("GET", "/v1/presets")).status == 200
