"""The worker's job handler on real NATS KV and S3: transient failures are retried, and the last
delivery ends the task as failed instead of leaving it `running`; a voice's decoded sample is kept in
memory (and forgotten with the voice); the completed event says where the job's time went; the speaker
similarity signal is measured after the job, when an encoder is loaded, and never fails a task."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from stack import Stack

from common.audio import Pcm
from common.owners import owned_key
from events import names
from events.bus import consumer_spec
from events.envelope import Envelope, utc_now_iso
from events.records import TaskRecord, TaskStatus, VoiceRecord, VoiceStatus
from events.replay import describe, task_timeline
from events.state import SharedState
from events.task_events import requested_event
from ops.client import eventually
from ops.samples import speech, speech_sample
from storage.keys import sample_key
from synth_worker.idle import IdleItem, IdleQueue
from synth_worker.jobs import JobClock, JobRunner
from synth_worker.metrics import WorkerMetrics
from synth_worker.prompts import PromptCache, PromptKey
from synth_worker.speaker.embedding import shared_encoder

MAX_DELIVER = consumer_spec(names.WORKER_CONSUMER).max_deliver


class HiccupEngine:
    """An engine that fails the way a flaky GPU driver does: not the input's fault."""

    name, version, sample_rate_hz = "hiccup", "1", 22050

    def synthesize(self, request):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


@dataclass
class StandInMessage:
    """What the handler may do with a JetStream message, recorded."""

    num_delivered: int
    calls: list[str] = field(default_factory=list)

    @property
    def metadata(self):
        return SimpleNamespace(num_delivered=self.num_delivered)

    async def ack(self) -> None:
        self.calls.append("ack")

    async def term(self) -> None:
        self.calls.append("term")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append("nak")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")


async def queued_task(
    stack: Stack, state: SharedState, *, with_sha256: bool = False, voice: VoiceRecord | None = None
) -> tuple[TaskRecord, VoiceRecord]:
    """A queued task of a fresh owner's voice (or of `voice`), whose record and sample are stored.
    `with_sha256`: the voice's record holds its sample's sha256, as real voices do (else "h", as in
    records a request event cannot be trusted to name the sample by)."""
    if voice is None:
        owner, now = f"o{uuid.uuid4().hex[:27]}", utc_now_iso()
        sample = speech_sample("wav")
        voice = VoiceRecord(
            voice_id="v_x",
            owner=owner,
            name="n",
            status=VoiceStatus.READY,
            duration_s=5,
            prompt_text="p",
            created_at=now,
            sample_key=sample_key(owner, "v_x"),
            audio_sha256=hashlib.sha256(sample).hexdigest() if with_sha256 else "h",
        )
        await stack.store.put(voice.sample_key, sample, "audio/wav")
        await state.voices.create(owned_key(owner, voice.voice_id), voice)
    owner, now = voice.owner, utc_now_iso()
    task = TaskRecord(
        task_id=f"t_{uuid.uuid4().hex[:26]}", owner=owner, status=TaskStatus.QUEUED, text="你好",
        voice_id=voice.voice_id, mode="zero_shot", format="mp3", trace_id="tr_test", created_at=now,
        updated_at=now,
    )  # fmt: skip
    await state.tasks.create(f"{owner}.{task.task_id}", task)
    return task, voice


async def test_transient_failures_retry_then_fail_on_the_last_delivery(stack: Stack) -> None:
    state = SharedState(stack.bus)
    task, voice = await queued_task(stack, state)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=HiccupEngine(),
                           executor=executor, metrics=WorkerMetrics())  # fmt: skip
        event = requested_event(task, voice, await state.user_keys.key_for(task.owner))
        first = StandInMessage(num_delivered=1)
        await runner(event, first)
        assert first.calls == ["nak"]
        assert (await state.tasks.get(task.owner, task.task_id)).status == TaskStatus.RUNNING

        last = StandInMessage(num_delivered=MAX_DELIVER)
        await runner(event, last)
    assert last.calls == ["term"]
    failed = await state.tasks.get(task.owner, task.task_id)
    assert failed.status == TaskStatus.FAILED
    assert failed.error.code == "synthesis_failed"

    async def failed_event_recorded() -> bool:
        return "tts.synthesis.failed" in [e.type for e in await task_timeline(stack.bus, task.task_id)]

    await eventually(failed_event_recorded)


class PlainEngine:
    """An engine that does not adapt to the speaker: it says every text the same way."""

    name, version, sample_rate_hz = "plain", "1", 16000

    def synthesize(self, request):
        return speech(request.text)


class BrokenEncoder:
    """A speaker encoder that fails, as one might on audio it was never trained for."""

    def embed(self, pcm):
        raise RuntimeError("mel spectrogram failed")


async def completed_event(stack: Stack, task_id: str) -> Envelope:
    async def completed() -> Envelope | None:
        events = await task_timeline(stack.bus, task_id)
        return next((e for e in events if e.type == "tts.synthesis.completed"), None)

    return await eventually(completed)


async def completed_data(stack: Stack, engine, encoder) -> tuple[dict, WorkerMetrics]:
    """Run one job with `engine` and `encoder`; the data of its completed event, and the runner's
    metrics once its similarity measurement (if any) is done."""
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    task, voice = await queued_task(stack, state)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=engine, executor=executor,
                           metrics=metrics, speaker_encoder=encoder)  # fmt: skip
        message = StandInMessage(num_delivered=1)
        await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)), message)
        await runner.settle()
        await runner.close()
    assert message.calls[-1] == "ack"
    return (await completed_event(stack, task.task_id)).data, metrics


def similarities(metrics: WorkerMetrics, engine: str) -> tuple[float, float]:
    """How many similarities the runner measured, and their sum."""
    labels = {"engine": engine}
    count = metrics.registry.get_sample_value("voicerelay_speaker_similarity_count", labels) or 0.0
    total = metrics.registry.get_sample_value("voicerelay_speaker_similarity_sum", labels) or 0.0
    return count, total


def skipped(metrics: WorkerMetrics, engine: str, reason: str) -> float:
    labels = {"engine": engine, "reason": reason}
    return metrics.registry.get_sample_value("voicerelay_speaker_similarity_skipped_total", labels) or 0.0


async def test_a_plain_engine_gets_a_similarity_but_no_profile(stack: Stack) -> None:
    data, metrics = await completed_data(stack, PlainEngine(), shared_encoder())
    assert "speaker_profile" not in data
    assert "speaker_similarity" not in data  # measured after the completion: the metric and the log
    count, value = similarities(metrics, "plain")
    # The sample and the output are both the default espeak voice.
    assert count == 1 and 0.5 < value <= 1.0, value


async def test_a_failing_similarity_leaves_the_task_succeeded(stack: Stack) -> None:
    data, metrics = await completed_data(stack, PlainEngine(), BrokenEncoder())
    assert "speaker_similarity" not in data and data["engine"] == "plain"
    assert similarities(metrics, "plain") == (0, 0)


async def test_without_an_encoder_there_is_no_similarity(stack: Stack) -> None:
    data, metrics = await completed_data(stack, PlainEngine(), None)
    assert "speaker_similarity" not in data
    assert similarities(metrics, "plain") == (0, 0)


class HeldEncoder:
    """The real speaker encoder, which waits for the test before each embedding."""

    def __init__(self) -> None:
        self.inner = shared_encoder()
        self.started, self.release = threading.Event(), threading.Event()

    def embed(self, pcm: Pcm) -> np.ndarray:
        self.started.set()
        if not self.release.wait(30):
            raise TimeoutError("the test never released the encoder")
        return self.inner.embed(pcm)


async def test_the_similarity_comes_after_the_completion_and_the_ack(stack: Stack) -> None:
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    task, voice = await queued_task(stack, state, with_sha256=True)
    encoder = HeldEncoder()
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=PlainEngine(),
                           executor=executor, metrics=metrics, speaker_encoder=encoder,
                           similarity_settle_s=0)  # fmt: skip
        try:
            message = StandInMessage(num_delivered=1)
            await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)), message)
            # Done and told while the encoder has not given a single embedding.
            assert message.calls[-1] == "ack"
            assert (await state.tasks.get(task.owner, task.task_id)).status == TaskStatus.SUCCEEDED
            assert "speaker_similarity" not in (await completed_event(stack, task.task_id)).data
            assert await asyncio.to_thread(encoder.started.wait, 10), "the measurement never started"
            assert similarities(metrics, "plain") == (0, 0)
        finally:
            encoder.release.set()
        await runner.settle()
        await runner.close()
    count, value = similarities(metrics, "plain")
    assert count == 1 and 0.5 < value <= 1.0


async def test_the_similarity_waits_for_an_idle_worker_and_goes_with_its_voice(stack: Stack) -> None:
    """Measured only once no job has run for a while; a deleted voice's measurement is dropped."""
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    first, voice = await queued_task(stack, state, with_sha256=True)
    second, _ = await queued_task(stack, state, voice=voice)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=PlainEngine(),
                           executor=executor, metrics=metrics, speaker_encoder=shared_encoder(),
                           similarity_settle_s=60)  # fmt: skip
        key = await state.user_keys.key_for(voice.owner)
        for task in (first, second):
            await runner(requested_event(task, voice, key), StandInMessage(num_delivered=1))
        assert similarities(metrics, "plain") == (0, 0)  # the worker has not been idle for a minute
        await runner.voice_deleted(voice.owner, voice.voice_id)
        await runner.settle()
        await runner.close()
    assert similarities(metrics, "plain") == (0, 0)
    assert skipped(metrics, "plain", "voice_deleted") == 2


class CountingStore:
    """The stack's object store, counting reads by key."""

    def __init__(self, store) -> None:
        self._store = store
        self.reads: dict[str, int] = {}

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def get(self, key: str) -> bytes:
        self.reads[key] = self.reads.get(key, 0) + 1
        return await self._store.get(key)


async def run_tasks(stack: Stack, *, with_sha256: bool, n: int = 2, delete_before: int | None = None):
    """`n` tasks of one voice through one runner over a CountingStore: the store, the runner, the
    tasks as they ended. `delete_before`: the voice's record is deleted before that task."""
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    store = CountingStore(stack.store)
    first, voice = await queued_task(stack, state, with_sha256=with_sha256)
    tasks = [first] + [(await queued_task(stack, state, voice=voice))[0] for _ in range(n - 1)]
    key = await state.user_keys.key_for(voice.owner)
    ended = []
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=store, engine=PlainEngine(), executor=executor,
                           metrics=metrics)  # fmt: skip
        for index, task in enumerate(tasks):
            if index == delete_before:
                await state.voices.delete(owned_key(voice.owner, voice.voice_id))
            await runner(requested_event(task, voice, key), StandInMessage(num_delivered=1))
            ended.append(await state.tasks.get(task.owner, task.task_id))
        await runner.close()
    return store, runner, voice, ended, metrics


async def test_a_voices_later_tasks_read_no_sample(stack: Stack) -> None:
    store, runner, voice, ended, metrics = await run_tasks(stack, with_sha256=True, n=3)
    assert [t.status for t in ended] == [TaskStatus.SUCCEEDED] * 3
    assert store.reads[voice.sample_key] == 1  # the first task's; the others found it in memory
    assert (runner.prompts.hits, runner.prompts.misses) == (2, 1)
    assert runner.prompts.held_for(voice.owner, voice.voice_id) == 1
    lookups = {o: metrics.registry.get_sample_value("voicerelay_voice_sample_lookups_total", {"outcome": o})
               for o in ("memory", "stored")}  # fmt: skip
    assert lookups == {"memory": 2.0, "stored": 1.0}


async def test_requests_that_do_not_name_the_samples_hash_read_it_as_before(stack: Stack) -> None:
    store, _, voice, ended, _ = await run_tasks(stack, with_sha256=False)
    assert [t.status for t in ended] == [TaskStatus.SUCCEEDED] * 2
    assert store.reads[voice.sample_key] == 2


async def test_a_voice_gone_from_kv_is_forgotten_and_fails_its_next_task(stack: Stack) -> None:
    """Its sample is still in memory (and even in S3 here): the record alone says the voice is gone."""
    _, runner, voice, ended, _ = await run_tasks(stack, with_sha256=True, delete_before=1)
    assert ended[0].status == TaskStatus.SUCCEEDED
    assert (ended[1].status, ended[1].error.code) == (TaskStatus.FAILED, "voice_deleted")
    assert runner.prompts.held_for(voice.owner, voice.voice_id) == 0
    assert runner.prompts.is_forgotten(voice.owner, voice.voice_id)


async def test_a_deleted_voice_is_forgotten_when_the_deletion_is_heard(stack: Stack) -> None:
    state = SharedState(stack.bus)
    task, voice = await queued_task(stack, state, with_sha256=True)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=PlainEngine(),
                           executor=executor, metrics=WorkerMetrics())  # fmt: skip
        await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)),
                     StandInMessage(num_delivered=1))  # fmt: skip
        assert runner.prompts.held_for(voice.owner, voice.voice_id) == 1
        await runner.voice_deleted(voice.owner, voice.voice_id)
        await runner.close()
    assert runner.prompts.held_for(voice.owner, voice.voice_id) == 0
    assert runner.prompts.bytes_held == 0


async def test_the_completed_event_says_where_the_time_went(stack: Stack) -> None:
    _, _, _, ended, _ = await run_tasks(stack, with_sha256=True)
    first, second = [(await completed_event(stack, t.task_id)).data for t in ended]
    for data in (first, second):
        timings = data["timings_ms"]
        assert list(timings) == [
            "queue",
            "fetch_prompt",
            "first_audio",
            "synthesis",
            "encode",
            "store",
            "record",
            "total",
        ], timings  # fmt: skip  (no profile: the plain engine does not adapt)
        assert all(isinstance(v, float) and v >= 0 for v in timings.values()), timings
        assert timings["synthesis"] == pytest.approx(data["synthesis_s"] * 1000, abs=0.1)
        assert timings["first_audio"] >= timings["fetch_prompt"]
        parts = ("fetch_prompt", "synthesis", "encode", "store", "record")
        assert timings["total"] >= sum(timings[k] for k in parts) * 0.99, timings
    assert second["timings_ms"]["fetch_prompt"] < 1000  # from memory


# --- the pieces, without services ---------------------------------------------------------------------


def test_the_job_clock_orders_and_rounds_its_stages() -> None:
    clock = JobClock("2020-01-01T00:00:00.000Z")
    with clock.stage("store"):
        pass
    clock.mark("first_audio")
    clock.mark("first_audio")  # the first time counts
    timings = clock.timings_ms(0.12345)
    assert list(timings) == ["queue", "first_audio", "synthesis", "store", "total"]
    assert timings["queue"] > 1e11 and timings["synthesis"] == 123.5
    assert "queue" not in JobClock("not a time").timings_ms(0.0)


def test_the_replay_line_shows_the_timings_compactly() -> None:
    event = Envelope(
        id="t_1.completed", type="tts.synthesis.completed", version=1, time="2026-01-01T00:00:00.000Z",
        openid="o_x", trace_id="tr_x", task_id="t_1",
        data={"engine": "espeak", "timings_ms": {"queue": 12.34, "fetch_prompt": 0.4, "total": 640.0}},
    )  # fmt: skip
    assert "timings_ms=queue:12,fetch_prompt:0.4,total:640 " in describe(event)


def pcm(n: int) -> Pcm:
    return Pcm(np.zeros(n, np.float32), 16000)


def test_the_prompt_cache_is_bounded_by_entries_and_bytes() -> None:
    cache = PromptCache(max_entries=2, max_bytes=4000 * 4)
    keys = [PromptKey("o_a", f"v_{i}", f"k{i}", "0" * 64) for i in range(3)]
    for key in keys:
        assert cache.put(key, pcm(1000))
    assert cache.get(keys[0]) is None and cache.get(keys[2]) is not None  # least recently used out
    assert cache.put(keys[0], pcm(3000))  # 4000 samples held: at the byte bound
    assert cache.get(keys[1]) is None  # evicted for it
    assert cache.bytes_held == 4000 * 4
    assert not cache.put(PromptKey("o_a", "v_big", "kb", "0" * 64), pcm(5000))  # larger than the cache


def test_the_prompt_cache_refuses_a_deleted_voice_for_good() -> None:
    cache = PromptCache()
    key = PromptKey("o_a", "v_1", "k", "0" * 64)
    cache.put(key, pcm(10))
    cache.put(PromptKey("o_a", "v_2", "k2", "0" * 64), pcm(10))
    assert cache.forget_voice("o_a", "v_1") == 1
    assert cache.get(key) is None and not cache.put(key, pcm(10))  # a late put, after the deletion
    assert cache.held_for("o_a", "v_2") == 1 and cache.bytes_held == 40


async def test_idle_work_waits_for_the_worker_to_settle() -> None:
    ran: list[str] = []
    queue = IdleQueue(settle_s=0.2, max_pending=8, max_bytes=1000)

    def item(name: str) -> IdleItem:
        async def run() -> None:
            ran.append(name)

        return IdleItem("o_a", "v_1", 10, run)

    with queue.busy():
        queue.submit(item("a"))
        await asyncio.sleep(0.3)
        assert ran == []  # a job is running
    await asyncio.sleep(0.05)
    assert ran == []  # it has only just ended
    await asyncio.sleep(0.3)
    assert ran == ["a"]
    await queue.close()


async def test_idle_work_is_bounded_and_owned() -> None:
    dropped: list[tuple[str, str]] = []
    ran: list[str] = []
    queue = IdleQueue(settle_s=60, max_pending=2, max_bytes=25,
                      on_dropped=lambda item, reason: dropped.append((item.voice_id, reason)))  # fmt: skip

    def item(voice_id: str, nbytes: int = 10) -> IdleItem:
        async def run() -> None:
            ran.append(voice_id)

        return IdleItem("o_a", voice_id, nbytes, run)

    with queue.busy():
        for voice_id in ("v_1", "v_2", "v_3"):
            queue.submit(item(voice_id))
    assert dropped == [("v_1", "backlog")] and queue.pending == 2
    queue.submit(item("v_4", nbytes=15))  # 35 bytes: the oldest goes
    assert dropped[-1] == ("v_2", "backlog")
    assert queue.forget_voice("o_a", "v_3") == 1 and dropped[-1] == ("v_3", "voice_deleted")
    await queue.settle()  # now, idle or not
    assert ran == ["v_4"]
    queue.submit(item("v_5"))
    await queue.close()
    assert dropped[-1] == ("v_5", "shutdown") and ran == ["v_4"]
    queue.submit(item("v_6"))  # after close: dropped at once
    assert dropped[-1] == ("v_6", "shutdown")
