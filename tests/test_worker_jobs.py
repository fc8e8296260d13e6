"""The worker's job handler on real NATS KV and S3: transient failures are retried, and the last
delivery ends the task as failed instead of leaving it `running`; the speaker similarity signal is
measured when an encoder is loaded and never fails a task."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

from stack import Stack

from events import names
from events.bus import consumer_spec
from events.envelope import utc_now_iso
from events.records import TaskRecord, TaskStatus, VoiceRecord, VoiceStatus
from events.replay import task_timeline
from events.state import SharedState
from events.task_events import requested_event
from ops.client import eventually
from ops.samples import speech, speech_sample
from storage.keys import sample_key
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics
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


async def queued_task(stack: Stack, state: SharedState) -> tuple[TaskRecord, VoiceRecord]:
    owner, now = f"o{uuid.uuid4().hex[:27]}", utc_now_iso()
    voice = VoiceRecord(
        voice_id="v_x",
        owner=owner,
        name="n",
        status=VoiceStatus.READY,
        duration_s=5,
        prompt_text="p",
        created_at=now,
        sample_key=sample_key(owner, "v_x"),
        audio_sha256="h",
    )
    await stack.store.put(voice.sample_key, speech_sample("wav"), "audio/wav")
    task = TaskRecord(
        task_id=f"t_{uuid.uuid4().hex[:26]}", owner=owner, status=TaskStatus.QUEUED, text="你好",
        voice_id="v_x", mode="zero_shot", format="mp3", trace_id="tr_test", created_at=now, updated_at=now,
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


async def completed_data(stack: Stack, engine, encoder) -> dict:
    """Run one job with `engine` and `encoder`; the data of its completed event."""
    state = SharedState(stack.bus)
    task, voice = await queued_task(stack, state)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(bus=stack.bus, state=state, store=stack.store, engine=engine, executor=executor,
                           metrics=WorkerMetrics(), speaker_encoder=encoder)  # fmt: skip
        message = StandInMessage(num_delivered=1)
        await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)), message)
    assert message.calls[-1] == "ack"

    async def completed() -> dict | None:
        events = await task_timeline(stack.bus, task.task_id)
        return next((e.data for e in events if e.type == "tts.synthesis.completed"), None)

    return await eventually(completed)


async def test_a_plain_engine_gets_a_similarity_but_no_profile(stack: Stack) -> None:
    data = await completed_data(stack, PlainEngine(), shared_encoder())
    assert "speaker_profile" not in data
    # The sample and the output are both the default espeak voice.
    assert 0.5 < data["speaker_similarity"] <= 1.0, data


async def test_a_failing_similarity_leaves_the_task_succeeded(stack: Stack) -> None:
    data = await completed_data(stack, PlainEngine(), BrokenEncoder())
    assert "speaker_similarity" not in data and data["engine"] == "plain"


async def test_without_an_encoder_there_is_no_similarity(stack: Stack) -> None:
    data = await completed_data(stack, PlainEngine(), None)
    assert "speaker_similarity" not in data
