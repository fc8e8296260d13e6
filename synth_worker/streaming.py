"""An engine's stream, run on the engine's executor, its pieces handed to the event loop as they come.

The whole stream runs in one executor call, so the engine's one thread is busy for the job's whole
synthesis, exactly as with `synthesize` (anything else queued on the executor, such as forgetting a
deleted voice, waits until the stream ends and never meets it half-way). Each piece crosses to the
loop with `call_soon_threadsafe`; the loop awaits `on_piece` for it (publishing the chunk) while the
engine makes the next.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from common.audio import Pcm
from synth_worker.engines.base import Engine, SynthesisRequest, speech_stream
from synth_worker.engines.errors import EngineError


@dataclass(frozen=True, slots=True)
class Spoken:
    speech: Pcm  # every piece, joined
    synthesis_s: float  # from the call to the last piece
    first_piece_s: float  # from the call to the first piece: the engine's own time to first audio
    pieces: int


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


_END = object()


async def stream_speech(
    engine: Engine,
    request: SynthesisRequest,
    executor: Executor,
    on_piece: Callable[[Pcm], Awaitable[None]],
) -> Spoken:
    """Synthesise `request` piece by piece on `executor`, awaiting `on_piece` for each, in order.

    Raises what the engine raises. Cancelled (the worker shutting down), it stops the engine's stream
    after its current piece and waits for the executor call to end before it re-raises.
    """
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[object] = asyncio.Queue()  # bounded by the speech itself, which is kept anyway
    stop = threading.Event()
    marks: dict[str, float] = {}

    def hand_over(item: object) -> None:
        loop.call_soon_threadsafe(pieces.put_nowait, item)

    def produce() -> None:
        started = time.perf_counter()
        try:
            stream = speech_stream(engine, request)
            try:
                for piece in stream:
                    marks.setdefault("first", time.perf_counter() - started)
                    hand_over(piece)
                    if stop.is_set():
                        break
            finally:
                close = getattr(stream, "close", None)
                if callable(close):
                    close()  # stops the engine's work early when the loop is done with it
        except BaseException as exc:  # the loop raises it
            hand_over(_Failed(exc))
            return
        marks["total"] = time.perf_counter() - started
        hand_over(_END)

    running = loop.run_in_executor(executor, produce)
    parts: list[np.ndarray] = []
    rate_hz = engine.sample_rate_hz
    try:
        while (item := await pieces.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, Pcm)
            rate_hz = item.sample_rate_hz
            parts.append(item.samples)
            await on_piece(item)
    finally:
        stop.set()
        await asyncio.shield(running)  # the executor call ends after its current piece
    if not parts:
        raise EngineError(f"{engine.name} produced no audio")
    speech = Pcm(np.concatenate(parts), rate_hz)
    return Spoken(speech, marks["total"], marks["first"], len(parts))
