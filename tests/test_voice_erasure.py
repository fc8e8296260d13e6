"""Erasure that sticks on the worker side: every worker hears a voice's deletion and forgets what it
keeps in memory (profiles, decoded samples, an engine's registered speakers), and a job that stores
features of a voice deleted while it ran erases them again, so nothing made from the voice outlives
its deletion."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from stack import Stack, another_worker, queued_job
from test_cosyvoice3 import FakeCosyVoice3, request, voice
from test_speaker_profiles import fresh_text, profile_keys
from test_worker_jobs import StandInMessage

from common.audio import Pcm
from common.owners import owned_key
from events.records import TaskRecord, TaskStatus
from events.state import SharedState
from ops.client import ApiClient, eventually
from storage.keys import features_prefix
from synth_worker.engines.base import DelayedEngine, SynthesisRequest, forgets_voices
from synth_worker.engines.cosyvoice3 import CosyVoice3Engine
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics
from synth_worker.speaker.embedding import shared_encoder

# --- stand-ins ----------------------------------------------------------------------------------------


class ForgetfulEspeak:
    """The espeak engine, plus what CosyVoice3 has and espeak lacks: state per voice to forget.

    Records each `forget_voice` and the thread it ran on (it must be the engine's executor's).
    """

    def __init__(self) -> None:
        self.inner = EspeakEngine()  # adapts_to_speaker finds the analysis here, as through DelayedEngine
        self.name, self.version = self.inner.name, self.inner.version
        self.sample_rate_hz = self.inner.sample_rate_hz
        self.forgotten: list[tuple[str, str, str]] = []  # owner, voice id, thread name

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        return self.inner.synthesize(request)

    def forget_voice(self, owner: str, voice_id: str) -> int:
        self.forgotten.append((owner, voice_id, threading.current_thread().name))
        return 1


class HeldAnalysis(EspeakEngine):
    """Espeak whose speaker analysis waits, once started, until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def analyse_speaker(self, prompt: Pcm) -> bytes:
        self.started.set()
        if not self.release.wait(60):
            raise TimeoutError("the test never released the analysis")
        return super().analyse_speaker(prompt)


# --- helpers ------------------------------------------------------------------------------------------


async def used_voice(stack: Stack) -> tuple[ApiClient, str, str]:
    """A ready voice of a fresh user: the client, the owner, the voice id."""
    client = await stack.user()
    voice_id = (await stack.ready_voice(client))["voice_id"]
    return client, client.openid or "", voice_id


async def run_job(stack: Stack, runner: JobRunner, owner: str, voice_id: str) -> TaskRecord:
    """A task on the voice, handed to `runner` as the work consumer would; the task once it ends."""
    state = SharedState(stack.bus)
    task, event = await queued_job(state, owner, voice_id, text=fresh_text(), trace_id="tr_erasure")
    message = StandInMessage(num_delivered=1)
    await runner(event, message)
    assert message.calls[-1] in ("ack", "term"), message.calls
    done = await state.tasks.get(owner, task.task_id)
    assert done is not None
    return done


async def nothing_stored_under(stack: Stack, owner: str, voice_id: str) -> bool:
    return await stack.store.delete_prefix(features_prefix(owner, voice_id)) == 0


async def delete(client: ApiClient, voice_id: str) -> None:
    assert (await client.request("DELETE", f"/v1/voices/{voice_id}")).status == 204


# --- every worker forgets a deleted voice ------------------------------------------------------------


async def test_a_worker_forgets_a_deleted_voice(stack: Stack) -> None:
    engine = ForgetfulEspeak()
    async with another_worker(stack, engine=engine) as runner:
        client, owner, voice_id = await used_voice(stack)
        keys = await profile_keys(stack, owner, voice_id)  # read from the sample while it exists
        assert (await run_job(stack, runner, owner, voice_id)).status == TaskStatus.SUCCEEDED
        assert runner.profiles.held_for(owner, voice_id) >= 1  # the engine's profile, the embedding
        assert runner.prompts.held_for(owner, voice_id) == 1  # the decoded sample
        assert await stack.store.exists(keys[0].object_key)

        await delete(client, voice_id)

        def forgotten() -> list[str]:  # the threads it was forgotten on
            return [thread for o, v, thread in engine.forgotten if (o, v) == (owner, voice_id)]

        await eventually(lambda: runner.profiles.held_for(owner, voice_id) == 0)
        assert runner.prompts.held_for(owner, voice_id) == 0
        [thread] = await eventually(forgotten)
        assert thread.startswith("engine")  # the engine's own executor, never the event loop
    for key in keys:
        assert not await stack.store.exists(key.object_key), key
    assert await nothing_stored_under(stack, owner, voice_id)


async def test_features_stored_after_the_gateways_sweep_are_swept_when_the_deletion_is_heard(
    stack: Stack,
) -> None:
    """The race the job's own check cannot see: its profile is stored after the gateway deleted the
    features prefix, and its check reads the voice before the gateway deletes the record."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(
            bus=stack.bus, state=SharedState(stack.bus), store=stack.store, engine=EspeakEngine(),
            executor=executor, metrics=WorkerMetrics(),
        )  # fmt: skip
        client, owner, voice_id = await used_voice(stack)
        keys = await profile_keys(stack, owner, voice_id)
        assert (await run_job(stack, runner, owner, voice_id)).status == TaskStatus.SUCCEEDED
        late = await stack.store.get(keys[0].object_key)
        await delete(client, voice_id)  # this runner follows no deletions: nothing is forgotten yet
        await stack.store.put(keys[0].object_key, late, "application/octet-stream")  # the late write

        await runner.voice_deleted(owner, voice_id)  # as its worker's follower calls it

        assert runner.profiles.held_for(owner, voice_id) == 0
        assert await nothing_stored_under(stack, owner, voice_id)


# --- a voice deleted during its first synthesis -------------------------------------------------------


@pytest.mark.timeout(120)
async def test_a_voice_deleted_during_its_first_synthesis_leaves_no_features(stack: Stack) -> None:
    """The job analyses the sample while the voice is deleted; what it stores afterwards (the engine's
    profile, the speaker embedding) is erased again once it finds the voice gone."""
    engine = HeldAnalysis()
    client, owner, voice_id = await used_voice(stack)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine") as executor:
        runner = JobRunner(
            bus=stack.bus, state=SharedState(stack.bus), store=stack.store, engine=engine,
            executor=executor, metrics=WorkerMetrics(), speaker_encoder=shared_encoder(),
        )  # fmt: skip
        job = asyncio.create_task(run_job(stack, runner, owner, voice_id))
        try:
            assert await asyncio.to_thread(engine.started.wait, 60), "the analysis never started"
            await delete(client, voice_id)
            assert await nothing_stored_under(stack, owner, voice_id)  # the gateway's sweep, so far
        finally:
            engine.release.set()
        task = await job
        await runner.close()  # a similarity measurement, had the job left one, ends with the runner
    # Succeeded (the sample was read before the deletion) or failed because the voice is gone; either
    # way nothing made from the voice is left, in S3 or in memory.
    assert task.status == TaskStatus.SUCCEEDED or (
        task.status == TaskStatus.FAILED and task.error is not None and task.error.code == "voice_deleted"
    ), task
    assert await nothing_stored_under(stack, owner, voice_id)
    assert runner.profiles.held_for(owner, voice_id) == 0


# --- CosyVoice3 forgets by owner and voice id (no services) -------------------------------------------


def test_cosyvoice3_forgets_the_speakers_of_a_deleted_voice() -> None:
    model = FakeCosyVoice3()
    engine = CosyVoice3Engine(model)
    alice_1 = request(speaker_key="o_alice.aaa", voice_key=owned_key("o_alice", "v_1"))
    alice_2 = request(prompt=voice(2), speaker_key="o_alice.bbb", voice_key=owned_key("o_alice", "v_2"))
    # Alice's third voice is the very recording of her first: one registration, used by both.
    alice_3 = request(speaker_key="o_alice.aaa", voice_key=owned_key("o_alice", "v_3"))
    bob_1 = request(speaker_key="o_bob.aaa", voice_key=owned_key("o_bob", "v_1"))
    for each in (alice_1, alice_2, alice_3, bob_1, alice_1):
        engine.synthesize(each)
    assert engine.registered_speakers == 3 and len(model.registrations()) == 3
    alice_1_id = model.registrations()[0].args[2]

    forgetting = forgets_voices(DelayedEngine(engine, 0.0))  # the worker reaches it through wrappers
    assert forgetting is engine
    assert forgetting.forget_voice("o_alice", "v_3") == 1  # deleting either voice drops the shared one
    assert engine.registered_speakers == 2
    assert alice_1_id not in model.frontend.spk2info and len(model.frontend.spk2info) == 2
    assert engine.forget_voice("o_alice", "v_1") == 0  # already gone
    assert engine.forget_voice("o_bob", "v_2") == 0  # another voice of Bob's: his stays

    engine.synthesize(alice_1)  # used again (another worker's view of it, say): registered afresh
    assert len(model.registrations()) == 4
    assert engine.forget_voice("o_alice", "v_1") == 1
    assert engine.forget_voice("o_alice", "v_2") == 1
    bob_1_id = model.registrations()[2].args[2]
    assert engine.registered_speakers == 1 and list(model.frontend.spk2info) == [bob_1_id]


def test_engines_without_voice_state_have_nothing_to_forget() -> None:
    assert forgets_voices(EspeakEngine()) is None
    assert forgets_voices(DelayedEngine(EspeakEngine(), 0.0)) is None
