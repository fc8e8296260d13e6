"""The CosyVoice3 engine's stream and its guard against upstream's silent failures, without weights.

`FakeCosyVoice3` (tests/test_cosyvoice3.py) records calls; `ThreadedModel` below copies the part of
upstream's `CosyVoice3Model.tts` that matters here: the LLM in a thread of its own whose exception
nobody hears, and a stream loop that waits for tokens until the LLM says it has finished.
tests/test_cosyvoice3_upstream.py runs the same through upstream's real code.
"""

from __future__ import annotations

import threading
import time
import types
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_cosyvoice3 import PREFIX, FakeCosyVoice3, FakeTensor, request

from synth_worker.engines.cosyvoice3 import CosyVoice3Engine
from synth_worker.engines.cosyvoice_calls import UpstreamGuard, run_calls
from synth_worker.engines.errors import EngineError
from synth_worker.engines.text_chunks import FIRST_CHUNK_WEIGHT, chunk_weight, stream_chunks

LONG_TEXT = "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。" * 3


@pytest.fixture
def model() -> FakeCosyVoice3:
    return FakeCosyVoice3(model=types.SimpleNamespace(token_hop_len=25, first_hops=[]))


def test_the_first_chunk_of_a_stream_is_short_and_the_rest_keeps_its_chunks() -> None:
    chunks = stream_chunks(LONG_TEXT)
    assert chunk_weight(chunks[0]) <= FIRST_CHUNK_WEIGHT
    assert chunks[0] == "收到好友从远方寄来的生日礼物，"
    assert "".join(chunks) == LONG_TEXT
    assert stream_chunks("你好。") == ["你好。"]


def test_a_stream_yields_each_piece_upstream_makes(model: FakeCosyVoice3) -> None:
    engine = CosyVoice3Engine(model)
    pieces = list(engine.synthesize_stream(request(LONG_TEXT)))
    calls = model.inference_calls()
    assert len(calls) == len(stream_chunks(LONG_TEXT)) >= 2
    assert len(pieces) == 3 * len(calls)  # the stand-in streams three pieces per call
    assert all(c.kwargs["stream"] is True and c.kwargs["speed"] == 1.0 for c in calls)
    assert calls[0].args[0] == "收到好友从远方寄来的生日礼物，"
    assert all(p.sample_rate_hz == 24_000 for p in pieces)


def test_every_streamed_call_starts_from_the_first_hop(model: FakeCosyVoice3) -> None:
    engine = CosyVoice3Engine(model)
    for _ in range(2):
        list(engine.synthesize_stream(request(LONG_TEXT)))
    assert model.model is not None
    assert set(model.model.first_hops) == {25} and len(model.model.first_hops) >= 4


def test_another_speed_cannot_stream_upstream_so_each_chunk_comes_whole(model: FakeCosyVoice3) -> None:
    pieces = list(CosyVoice3Engine(model).synthesize_stream(request(LONG_TEXT, speed=1.5)))
    calls = model.inference_calls()
    assert all(c.kwargs["stream"] is False and c.kwargs["speed"] == 1.5 for c in calls)
    assert len(pieces) == 2 * len(calls)


def test_cross_lingual_streams_too(model: FakeCosyVoice3) -> None:
    list(CosyVoice3Engine(model).synthesize_stream(request("Hello there. " * 20, mode="cross_lingual")))
    calls = model.inference_calls()
    assert len(calls) >= 2 and all(c.args[0].startswith(PREFIX) and c.kwargs["stream"] for c in calls)


def test_a_stream_closed_early_starts_no_later_call_and_frees_the_model(model: FakeCosyVoice3) -> None:
    engine = CosyVoice3Engine(model)
    text = LONG_TEXT * 4
    stream = engine.synthesize_stream(request(text))
    next(stream)
    stream.close()
    # Upstream may have run ahead by the few pieces the queue holds, never through the whole text.
    assert len(model.inference_calls()) <= 3 < len(stream_chunks(text))
    assert engine.synthesize(request("你好。")).samples.size > 0  # the lock was released


@pytest.mark.timeout(30)
def test_an_upstream_that_stops_making_progress_fails_within_the_stall_bound() -> None:
    model = FakeCosyVoice3()
    released = threading.Event()

    def hangs(*_args: Any, **_kwargs: Any) -> Iterator[dict[str, Any]]:
        yield {"tts_speech": FakeTensor(np.zeros(100, np.float32))}
        released.wait(20)  # upstream waiting for tokens that never come
        return

    model.inference_zero_shot = hangs  # type: ignore[method-assign]
    engine = CosyVoice3Engine(model, stall_s=0.5)
    stream = engine.synthesize_stream(request())
    assert next(stream).samples.size == 100
    with pytest.raises(EngineError, match="no progress"):
        next(stream)
    released.set()


def test_a_slow_consumer_holds_upstream_back() -> None:
    produced: list[int] = []

    def many() -> Iterator[int]:
        for n in range(50):
            produced.append(n)
            yield n

    outputs = run_calls([many], UpstreamGuard(None), stall_s=5)
    assert next(outputs) == 0
    time.sleep(0.5)  # ample time for a pump without bounds to run through all 50
    assert len(produced) <= 8
    assert list(outputs) == list(range(1, 50))


# --- the LLM thread, as upstream runs it ------------------------------------------------------------------


class ThreadedModel:
    """Upstream's CosyVoice3Model.tts in miniature: LLM thread, token list, polling stream loop."""

    def __init__(self, tokens: int = 60, fail_after: int | None = None) -> None:
        self.tokens, self.fail_after = tokens, fail_after
        self.produced = 0  # tokens the LLM made, over every request
        self.token_hop_len = 25
        self.tts_speech_token_dict: dict[str, list[int]] = {}
        self.llm_end_dict: dict[str, bool] = {}
        self.llm = types.SimpleNamespace(inference=self._inference)

    def _inference(self, **_kwargs: Any) -> Iterator[int]:
        for n in range(self.tokens):
            if self.fail_after is not None and n == self.fail_after:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            time.sleep(0.002)
            self.produced += 1
            yield n

    def llm_job(self, text: str, this_uuid: str) -> None:
        for token in self.llm.inference(text=text):
            self.tts_speech_token_dict[this_uuid].append(token)
        self.llm_end_dict[this_uuid] = True

    def tts(self, text: str, stream: bool) -> Iterator[dict[str, Any]]:
        this_uuid = str(uuid.uuid1())
        self.tts_speech_token_dict[this_uuid], self.llm_end_dict[this_uuid] = [], False
        thread = threading.Thread(target=self.llm_job, args=(text, this_uuid))
        thread.start()
        offset = 0
        while stream:
            time.sleep(0.01)
            if len(self.tts_speech_token_dict[this_uuid]) - offset >= self.token_hop_len:
                offset += self.token_hop_len
                yield {"tts_speech": FakeTensor(np.full(self.token_hop_len * 10, 0.1, np.float32))}
            if self.llm_end_dict[this_uuid] and len(self.tts_speech_token_dict[this_uuid]) - offset < 25:
                break
        thread.join()
        remaining = len(self.tts_speech_token_dict.pop(this_uuid)) - offset
        if remaining <= 0 and offset == 0:
            raise ValueError("calculated padded input size per channel: (0). Kernel size: (3)")
        self.llm_end_dict.pop(this_uuid)
        yield {"tts_speech": FakeTensor(np.full(max(remaining, 0) * 10, 0.1, np.float32))}


class ThreadedCosyVoice3(FakeCosyVoice3):
    def __init__(self, inner: ThreadedModel) -> None:
        super().__init__(model=inner)  # type: ignore[arg-type]

    def _speak(self, method: str, args: tuple, kwargs: dict, prompt_wav: str) -> Iterator[dict[str, Any]]:
        self._record(method, args, kwargs, prompt_wav)
        assert self.model is not None
        return self.model.tts(args[0], kwargs["stream"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stream", [True, False])
def test_an_llm_thread_that_fails_is_an_engine_error_not_a_hang_or_a_flow_error(stream: bool) -> None:
    engine = CosyVoice3Engine(ThreadedCosyVoice3(ThreadedModel(fail_after=0)), stall_s=20)
    speech = engine.synthesize_stream if stream else engine.synthesize
    with pytest.raises(EngineError, match="LLM failed: RuntimeError: CUDA error") as raised:
        result = speech(request())
        list(result) if stream else result
    assert "padded input size" not in str(raised.value)


@pytest.mark.timeout(30)
def test_an_llm_that_fails_midway_fails_the_stream_after_the_audio_it_made() -> None:
    engine = CosyVoice3Engine(ThreadedCosyVoice3(ThreadedModel(tokens=200, fail_after=60)), stall_s=20)
    pieces = []
    with pytest.raises(EngineError, match="LLM failed"):
        for piece in engine.synthesize_stream(request()):
            pieces.append(piece)
    assert len(pieces) >= 1  # the hops made before the failure came through first


@pytest.mark.timeout(30)
def test_the_threaded_model_streams_and_a_closed_stream_stops_its_llm() -> None:
    inner = ThreadedModel(tokens=2000)
    engine = CosyVoice3Engine(ThreadedCosyVoice3(inner), stall_s=20)
    stream = engine.synthesize_stream(request())
    next(stream)
    stream.close()
    made = inner.produced
    assert made < 2000  # the LLM stopped at its next token rather than decoding to its limit
    time.sleep(0.1)
    assert inner.produced == made  # and it stays stopped: no thread decodes on behind our back
    assert inner.tts_speech_token_dict == {} and inner.llm_end_dict == {}  # upstream cleaned up
