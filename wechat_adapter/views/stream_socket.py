"""GET /v1/stream: a WebSocket, as `wx.connectSocket` opens it, that synthesises and streams in one go.

The socket is authenticated like every /v1 route, by its `Authorization` header (wx.connectSocket
takes a `header` option), and holds one of the user's stream slots while it is open. Each text frame
`{"type": "synthesize", …the fields of POST /v1/syntheses…, "stream_format"?: "pcm"|"mp3",
"idempotency_key"?}` goes through the very checks of POST /v1/syntheses (wechat_adapter.submission:
validation, rate limit, word list, msgSecCheck, idempotency, the result cache) and is answered by

    {"type": "task", "task": …}                 the task, as GET /v1/syntheses/{id} shows it
    {"type": "audio", "format", "sample_rate_hz"} before the first binary frame
    binary frames                                the audio (s16le PCM, or MP3 frames)
    {"type": "end", "task": …, "complete": bool}  complete false: cut short, play task.audio_url

or by `{"type": "error", "error": {"code", "message"}}` with the usual codes; the socket stays open
for the next request. Requests are served one after another (a few may wait); pings keep the socket
alive, and it closes after IDLE_S without a request. A client that stops reading is never buffered
for without bound: sending waits for it (TCP backpressure), and past SEND_TIMEOUT_S the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from wechat_adapter.errors import ERRORS, ApiError
from wechat_adapter.http.requests import caller_of, gateway_of
from wechat_adapter.listening import STREAM_FORMATS, Ending, StreamEncoder, task_audio
from wechat_adapter.streams import OpenStream, open_stream
from wechat_adapter.submission import submit
from wechat_adapter.views.common import task_json
from wechat_adapter.views.syntheses import checked_idempotency_key, parse_synthesis_request

log = logging.getLogger(__name__)

IDLE_S = 120.0  # no request for this long: the socket closes (the mini program reconnects on demand)
HEARTBEAT_S = 25.0  # pings; a client that answers none within it is gone
SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long is closed on, not buffered for
MAX_WAITING = 4  # frames a client may send ahead of the answers; one more closes the socket (1008)
MAX_MESSAGE_BYTES = 16 * 1024  # as JSON bodies elsewhere
_CLOSE_IDLE, _CLOSE_SLOW = 4000, 4001  # application close codes: idle, too slow a reader


async def stream_socket(request: web.Request) -> web.WebSocketResponse:
    gateway, caller = gateway_of(request), caller_of(request)
    async with open_stream(gateway, caller) as stream:
        socket = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MESSAGE_BYTES)
        await socket.prepare(request)
        waiting: asyncio.Queue[dict[str, Any] | ApiError | None] = asyncio.Queue()
        reader = asyncio.create_task(_read(socket, waiting), name="stream-socket-reader")
        try:
            while not (gateway.stopping.is_set() or stream.expired):
                try:
                    item = await asyncio.wait_for(waiting.get(), timeout=IDLE_S)
                except TimeoutError:
                    await socket.close(code=_CLOSE_IDLE, message=b"idle")
                    break
                if item is None:  # the client closed
                    break
                await stream.keep()
                if isinstance(item, ApiError):
                    await _send_error(socket, item)
                    continue
                try:
                    await _serve(request, socket, stream, item)
                except ApiError as exc:
                    await _send_error(socket, exc)
                except TimeoutError:
                    log.info("stream socket: the client stopped reading; closing")
                    await socket.close(code=_CLOSE_SLOW, message=b"too slow")
                    break
                except ConnectionResetError:
                    raise
                except Exception:  # as the HTTP routes' `internal`: the request fails, the socket stays
                    log.exception("stream socket request failed")
                    await _send_error(socket, ApiError("internal"))
        except ConnectionResetError:
            log.debug("stream socket client went away")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await socket.close()
    return socket


async def _read(socket: web.WebSocketResponse, waiting: asyncio.Queue[Any]) -> None:
    """Every frame the client sends, parsed, onto `waiting` (None when the socket closes). Runs
    beside the streaming, so pongs and closes are seen while audio goes out. A client that sends more
    than MAX_WAITING frames ahead of the answers is closed on (1008): the queue never grows past it."""
    async for message in socket:
        if waiting.qsize() >= MAX_WAITING:
            await socket.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many requests waiting")
            break
        if message.type != WSMsgType.TEXT:
            waiting.put_nowait(ApiError("invalid_request", detail="send text frames of JSON"))
            continue
        try:
            body = json.loads(message.data)
        except ValueError:
            waiting.put_nowait(ApiError("invalid_json"))
            continue
        if not isinstance(body, dict) or body.get("type") != "synthesize":
            waiting.put_nowait(ApiError("invalid_request", detail='expected {"type": "synthesize", …}'))
            continue
        waiting.put_nowait(body)
    waiting.put_nowait(None)


async def _serve(
    request: web.Request, socket: web.WebSocketResponse, stream: OpenStream, body: dict[str, Any]
) -> None:
    """One request: submit it as POST /v1/syntheses would, then stream its audio."""
    gateway, caller = gateway_of(request), caller_of(request)
    stream_format = body.pop("stream_format", "pcm")
    if stream_format not in STREAM_FORMATS:
        raise ApiError("invalid_request", detail=f"stream_format must be one of {', '.join(STREAM_FORMATS)}")
    key = body.pop("idempotency_key", None)
    if key is not None:
        key = checked_idempotency_key(key, "idempotency_key")
    body.pop("type")
    fields = parse_synthesis_request(body, text_max_chars=gateway.settings.text_max_chars)
    task = await submit(gateway, caller, fields, idempotency_key=key)
    await _send_json(socket, {"type": "task", "task": task_json(gateway, task)})
    encoder, announced, ending = StreamEncoder(gateway, stream_format), False, Ending("gone")
    audio = task_audio(gateway, task)
    try:
        async for piece in audio:
            if isinstance(piece, Ending):
                ending = piece
                break
            await stream.keep()
            if piece is None or socket.closed:
                if socket.closed or gateway.stopping.is_set():
                    return
                continue
            if not announced:
                announced = True
                rate = {"sample_rate_hz": piece.sample_rate_hz}
                await _send_json(socket, {"type": "audio", "format": stream_format, **rate})
            await _send_bytes(socket, await encoder.encode(piece))
    finally:
        await audio.aclose()
    await _send_bytes(socket, await encoder.finish())
    current = await gateway.state.tasks.get(task.owner, task.task_id) or task
    await _send_json(
        socket, {"type": "end", "task": task_json(gateway, current), "complete": ending.complete}
    )


async def _send_bytes(socket: web.WebSocketResponse, data: bytes) -> None:
    if data:
        await asyncio.wait_for(socket.send_bytes(data), timeout=SEND_TIMEOUT_S)


async def _send_json(socket: web.WebSocketResponse, message: dict[str, Any]) -> None:
    text = json.dumps(message, ensure_ascii=False)
    await asyncio.wait_for(socket.send_str(text), timeout=SEND_TIMEOUT_S)


async def _send_error(socket: web.WebSocketResponse, error: ApiError) -> None:
    if error.code == "internal" or ERRORS[error.code][0] >= 500:
        log.warning("stream socket request failed: %s (%s)", error.code, error.detail)
    await _send_json(
        socket, {"type": "error", "error": {"code": error.code, "message": ERRORS[error.code][1]}}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/stream", stream_socket)
