"""GET /v1/syntheses/{id}/stream on the real stack: audio while the task runs, the same audio as the
stored file, owner-only, whole once finished, and no mixed attempts when a job is redelivered.

Jobs are handed to a worker of the test's own (`another_worker`) whose engine paces its stream like a
GPU (a pause before each piece), so a stream is seen while its task still runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
from stack import Stack, another_worker, queued_job
from test_worker_jobs import StandInMessage

from common.audio import Pcm, decode_audio, rms_dbfs
from events.records import ErrorInfo, TaskStatus
from events.state import SharedState
from synth_worker import labels
from synth_worker.engines.base import Engine, SynthesisRequest
from synth_worker.engines.errors import EngineError
from synth_worker.engines.registry import load_engine

pytestmark = pytest.mark.stack

LONG_TEXT = (
    "今天天气很好，我们一起去公园散步吧。公园里有很多花，还有一个很大的湖。"
    "湖边有人在钓鱼，孩子们在草地上放风筝。傍晚的时候，我们沿着小路慢慢走回家。"
)


class PacedEngine:
    """An engine's stream with a pause before each piece, as a GPU makes them; `inner` passes the
    speaker adaptation through (synth_worker.engines.base.adapts_to_speaker)."""

    def __init__(self, inner: Engine, pause_s: float) -> None:
        self.inner, self.pause_s = inner, pause_s
        self.name, self.version, self.sample_rate_hz = inner.name, inner.version, inner.sample_rate_hz

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        return self.inner.synthesize(request)

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        for piece in self.inner.synthesize_stream(request):
            time.sleep(self.pause_s)
            yield piece


def pcm_of(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def ready_user(stack: Stack):
    client = await stack.user()
    voice_id = (await stack.ready_voice(client))["voice_id"]
    return client, voice_id


@pytest.mark.parametrize("audio_format", ["wav", "mp3"])
async def test_a_long_texts_stream_comes_before_the_task_succeeds_and_is_the_stored_audio(
    stack: Stack, audio_format: str
) -> None:
    client, voice_id = await ready_user(stack)
    state = SharedState(stack.bus)
    task, event = await queued_job(
        state, client.openid or "", voice_id, text=LONG_TEXT, audio_format=audio_format
    )
    got = await client.request("GET", f"/v1/syntheses/{task.task_id}")
    assert got.status == 200, got.body
    stream_url = got.body["stream_url"]
    assert f"/v1/syntheses/{task.task_id}/stream?sig=" in stream_url

    async with another_worker(stack, engine=PacedEngine(load_engine("espeak"), 0.4)) as runner:
        job = asyncio.create_task(runner(event, StandInMessage(num_delivered=1)))
        async with stack.http.get(f"{stream_url}&format=pcm") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "application/octet-stream"
            rate_hz = int(response.headers["X-Audio-Sample-Rate"])
            first = await response.content.readany()
            status_at_first_audio = (await client.request("GET", f"/v1/syntheses/{task.task_id}")).body[
                "status"
            ]
            rest = await response.read()
        await job

    assert status_at_first_audio in ("queued", "running")  # audio before the task was finished
    done = await state.tasks.get(client.openid or "", task.task_id)
    assert done is not None and done.status == TaskStatus.SUCCEEDED and done.audio_key
    stored = decode_audio(await stack.store.get(done.audio_key))
    streamed = pcm_of(first + rest)
    assert stored.sample_rate_hz == rate_hz
    # The same samples, the AIGC label at the end included: s16 both ways, at most a step apart; an
    # MP3 (encoded while the engine spoke, its label's tail joined on: output_file.py) to within
    # its coding noise, sample for sample as long.
    assert streamed.size == stored.samples.size
    if audio_format == "wav":
        assert np.max(np.abs(streamed - stored.samples)) <= 2 / 32768
    else:
        noise = np.sqrt(np.mean(np.square(streamed - stored.samples, dtype=np.float64)))
        assert rms_dbfs(Pcm(streamed, rate_hz)) - 20 * np.log10(noise) > 15  # signal to noise, dB
    # The label is in the stream: silence, then the spoken label, as the last seconds of the audio.
    label_n = round(labels.voice_label().duration_s * rate_hz)
    gap_n = round(labels.GAP_S * rate_hz)
    assert rms_dbfs(Pcm(streamed[-label_n:], rate_hz)) > -40
    assert not np.any(streamed[-label_n - gap_n + 10 : -label_n - 10])
    assert np.max(np.abs(stored.samples[-label_n - gap_n + 600 : -label_n - 600])) < 2e-3


async def test_another_users_stream_is_not_found(stack: Stack) -> None:
    owner, voice_id = await ready_user(stack)
    reply = await owner.synthesize("别人的声音。", voice_id)
    stranger = await stack.user()
    for task_id in (reply.body["task_id"], "t_" + "0" * 26, "nonsense"):
        answer = await stranger.request("GET", f"/v1/syntheses/{task_id}/stream")
        assert (answer.status, answer.error_code) == (404, "not_found")
    await owner.wait_task(reply.body["task_id"])


async def test_a_stream_after_completion_gives_the_whole_audio_at_once(stack: Stack) -> None:
    client, voice_id = await ready_user(stack)
    reply = await client.synthesize("完成以后再听。", voice_id, format="wav")
    task = await client.wait_task(reply.body["task_id"])
    stored = decode_audio((await client.request("GET", task["audio_url"])).body)

    pcm = await client.request("GET", f"/v1/syntheses/{task['task_id']}/stream?format=pcm")
    assert pcm.status == 200 and pcm.headers["X-Task-Status"] == "succeeded"
    assert np.max(np.abs(pcm_of(pcm.body) - stored.samples)) <= 2 / 32768

    mp3 = await client.request("GET", f"/v1/syntheses/{task['task_id']}/stream")  # mp3 by default
    assert mp3.status == 200 and mp3.headers["Content-Type"] == "audio/mpeg"
    assert decode_audio(mp3.body).duration_s == pytest.approx(task["duration_s"], abs=0.1)


async def test_a_failed_tasks_stream_ends_at_once_and_the_task_says_why(stack: Stack) -> None:
    client, voice_id = await ready_user(stack)
    state = SharedState(stack.bus)
    task, _ = await queued_job(state, client.openid or "", voice_id, text="不会合成。")
    await state.tasks.fail(task.owner, task.task_id, ErrorInfo("synthesis_failed", "失败了"))
    answer = await client.request("GET", f"/v1/syntheses/{task.task_id}/stream?format=pcm")
    assert answer.status == 200 and answer.body == b"" and answer.headers["X-Task-Status"] == "failed"
    assert (await client.request("GET", f"/v1/syntheses/{task.task_id}")).body["error"]["code"] == (
        "synthesis_failed"
    )


async def test_an_unknown_stream_format_is_refused(stack: Stack) -> None:
    client, voice_id = await ready_user(stack)
    reply = await client.synthesize("格式不对。", voice_id)
    answer = await client.request("GET", f"/v1/syntheses/{reply.body['task_id']}/stream?format=ogg")
    assert (answer.status, answer.error_code) == (400, "invalid_request")


class DyingOnce(PacedEngine):
    """Paced, and its first stream stops dead after two pieces, as when the worker is killed: no end
    marker follows, and the job comes back as its next delivery."""

    died = False

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        for number, piece in enumerate(super().synthesize_stream(request)):
            if number == 2 and not self.died:
                self.died = True
                raise EngineError("killed")
            yield piece


async def test_a_redelivered_job_never_mixes_its_audio_with_the_dead_attempts(stack: Stack) -> None:
    """The first attempt dies mid-stream. A listener who heard some of it is cut short (and the task
    completes with the second attempt's file); one who connects after the redelivery hears the second
    attempt alone, from its first sample: the stored audio exactly."""
    client, voice_id = await ready_user(stack)
    state = SharedState(stack.bus)
    task, event = await queued_job(state, client.openid or "", voice_id, text=LONG_TEXT, audio_format="wav")
    url = f"{stack.url}/v1/syntheses/{task.task_id}/stream?format=pcm"
    headers = {"Authorization": f"Bearer {client.token}"}

    async with another_worker(stack, engine=DyingOnce(load_engine("espeak"), 0.4)) as runner:
        # The response starts with the first audio: the job runs before the listener's headers come.
        first_try = StandInMessage(num_delivered=1)
        dying = asyncio.create_task(runner(event, first_try))
        async with stack.http.get(url, headers=headers) as early:
            heard = await early.content.readany()
            await dying
            assert first_try.calls[-1] == "nak"  # handed back, to be redelivered
            second = asyncio.create_task(runner(event, StandInMessage(num_delivered=2)))
            await asyncio.sleep(1.0)  # the second attempt's first pieces are out
            async with stack.http.get(url, headers=headers) as late:
                late_audio = await late.read()
            heard += await early.read()
        await second

    done = await state.tasks.get(task.owner, task.task_id)
    assert done is not None and done.status == TaskStatus.SUCCEEDED and done.audio_key
    stored = decode_audio(await stack.store.get(done.audio_key)).samples
    late_pcm, early_pcm = pcm_of(late_audio), pcm_of(heard)
    assert late_pcm.size == stored.size and np.max(np.abs(late_pcm - stored)) <= 2 / 32768
    # The early listener heard the dead attempt's two pieces and nothing of the second: no splice.
    assert 0 < early_pcm.size < stored.size
    assert np.max(np.abs(early_pcm - stored[: early_pcm.size])) <= 2 / 32768  # espeak: the same start
