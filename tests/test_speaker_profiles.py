"""A voice is analysed once, not per task: the profile comes from memory, else from S3, else is computed,
and lives under the voice's features prefix (owner in the key, deleted with the voice). After a task
the worker measures the speaker similarity of the output to the sample, into its metrics."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from stack import Stack
from test_worker_jobs import StandInMessage

from common.audio import Pcm
from common.owners import owned_key
from events.envelope import utc_now_iso
from events.names import EventType
from events.records import TaskRecord, TaskStatus
from events.replay import task_timeline
from events.state import SharedState
from events.task_events import requested_event
from ops.client import ApiClient, eventually
from ops.services.ports import free_port
from storage.keys import features_prefix, sample_key
from storage.objects import ObjectStore
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.jobs import EMBEDDING_ANALYSIS, EMBEDDING_VERSION, JobRunner
from synth_worker.metrics import WorkerMetrics
from synth_worker.speaker.embedding import shared_encoder
from synth_worker.speaker.profiles import ProfileCache, ProfileKey

PROMPT = Pcm(np.zeros(1600, dtype=np.float32), 16000)


@dataclass
class AnalysedVoice:
    client: ApiClient
    voice_id: str
    first: dict[str, Any]  # data of the completed events of its first two tasks
    second: dict[str, Any]


def fresh_text() -> str:
    return f"第{uuid.uuid4().hex[:6]}句，声音只分析一次。"


async def completed_data(stack: Stack, client: ApiClient, voice_id: str) -> dict[str, Any]:
    """Synthesise a fresh text with the voice; the data of the task's completed event."""
    reply = await client.synthesize(fresh_text(), voice_id)
    assert reply.status == 202, reply.body
    task_id = reply.body["task_id"]
    task = await client.wait_task(task_id)
    assert task["status"] == "succeeded", task

    async def completed() -> dict[str, Any] | None:
        events = await task_timeline(stack.bus, task_id)
        return next((e.data for e in events if e.type == EventType.SYNTHESIS_COMPLETED), None)

    return await eventually(completed)


async def profile_keys(stack: Stack, owner: str, voice_id: str) -> list[ProfileKey]:
    """Where the worker keeps the engine's profile and the sample's speaker embedding."""
    audio_sha256 = hashlib.sha256(await stack.store.get(sample_key(owner, voice_id))).hexdigest()
    return [
        ProfileKey(owner, voice_id, audio_sha256, "espeak", EspeakEngine().profile_version),
        ProfileKey(owner, voice_id, audio_sha256, EMBEDDING_ANALYSIS, EMBEDDING_VERSION),
    ]


@pytest.fixture(scope="module")
async def analysed(stack: Stack) -> AnalysedVoice:
    client = await stack.user()
    voice_id = (await stack.ready_voice(client))["voice_id"]
    first = await completed_data(stack, client, voice_id)
    second = await completed_data(stack, client, voice_id)
    return AnalysedVoice(client, voice_id, first, second)


async def stored(stack: Stack, keys: list[ProfileKey]) -> bool:
    return all([await stack.store.exists(key.object_key) for key in keys])


async def test_the_second_task_on_a_voice_skips_the_analysis(stack: Stack, analysed: AnalysedVoice) -> None:
    assert analysed.first["speaker_profile"] == "computed"
    assert analysed.second["speaker_profile"] == "memory"
    keys = await profile_keys(stack, analysed.client.openid or "", analysed.voice_id)
    for key in keys:
        assert key.object_key.startswith(features_prefix(key.owner, key.voice_id))
    assert await stack.store.exists(keys[0].object_key), keys[0]
    # The sample's embedding is made for the similarity signal, measured once the worker is idle.
    await eventually(lambda: stored(stack, keys))


async def test_completed_events_carry_timings_not_the_similarity(analysed: AnalysedVoice) -> None:
    for data in (analysed.first, analysed.second):
        assert "speaker_similarity" not in data, data  # measured after the completion (metrics, log)
        assert data["timings_ms"]["profile"] >= 0 and data["timings_ms"]["total"] > 0, data
    # The first task analysed the voice; the second found its profile (and its sample) in memory.
    assert analysed.first["timings_ms"]["profile"] > analysed.second["timings_ms"]["profile"]


async def run_in_a_new_worker(stack: Stack, analysed: AnalysedVoice) -> tuple[dict[str, Any], WorkerMetrics]:
    """A task on the voice, run by a JobRunner with an empty memory: its completed data and metrics."""
    state, metrics = SharedState(stack.bus), WorkerMetrics()
    owner = analysed.client.openid or ""
    voice = await state.voices.get(owner, analysed.voice_id)
    assert voice is not None
    now = utc_now_iso()
    task = TaskRecord(
        task_id=f"t_{uuid.uuid4().hex[:26]}", owner=owner, status=TaskStatus.QUEUED, text=fresh_text(),
        voice_id=voice.voice_id, mode="zero_shot", format="mp3", trace_id="tr_test", created_at=now,
        updated_at=now,
    )  # fmt: skip
    await state.tasks.create(owned_key(owner, task.task_id), task)
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(
            bus=stack.bus, state=state, store=stack.store, engine=EspeakEngine(), executor=executor,
            metrics=metrics, speaker_encoder=shared_encoder(),
        )  # fmt: skip
        message = StandInMessage(num_delivered=1)
        await runner(requested_event(task, voice, await state.user_keys.key_for(task.owner)), message)
        await runner.settle()  # the similarity measurement, done when the worker is idle
        await runner.close()
    assert message.calls[-1] == "ack"

    async def completed() -> dict[str, Any] | None:
        events = await task_timeline(stack.bus, task.task_id)
        return next((e.data for e in events if e.type == EventType.SYNTHESIS_COMPLETED), None)

    return await eventually(completed), metrics


async def test_a_new_worker_reads_the_stored_profile(stack: Stack, analysed: AnalysedVoice) -> None:
    data, metrics = await run_in_a_new_worker(stack, analysed)
    assert data["speaker_profile"] == "stored"
    labels = {"engine": "espeak"}
    assert metrics.registry.get_sample_value("voicerelay_speaker_similarity_count", labels) == 1
    similarity = metrics.registry.get_sample_value("voicerelay_speaker_similarity_sum", labels)
    assert -1.0 <= similarity <= 1.0 and similarity == round(similarity, 3)
    for analysis in ("espeak", EMBEDDING_ANALYSIS):
        assert lookups(metrics, analysis, "stored") == 1
        assert lookups(metrics, analysis, "computed") == 0


async def test_a_damaged_stored_profile_is_analysed_again(stack: Stack, analysed: AnalysedVoice) -> None:
    """A corrupt cache entry must not poison the voice: the worker drops it and analyses once more."""
    espeak_key, _ = await profile_keys(stack, analysed.client.openid or "", analysed.voice_id)
    good = await stack.store.get(espeak_key.object_key)
    await stack.store.put(espeak_key.object_key, b'{"v": "not a profile"}', "application/octet-stream")
    data, _ = await run_in_a_new_worker(stack, analysed)
    assert data["speaker_profile"] == "computed"
    assert await stack.store.get(espeak_key.object_key) == good  # deterministic: the same profile again


def lookups(metrics: WorkerMetrics, analysis: str, outcome: str) -> float:
    labels = {"analysis": analysis, "outcome": outcome}
    return metrics.registry.get_sample_value("voicerelay_speaker_profile_lookups_total", labels) or 0.0


async def test_two_users_with_one_recording_get_separate_profiles(stack: Stack) -> None:
    alice, bob = await stack.user("alice"), await stack.user("bob")
    alice_voice = (await stack.ready_voice(alice))["voice_id"]
    bob_voice = (await stack.ready_voice(bob))["voice_id"]
    alice_keys = await profile_keys(stack, alice.openid or "", alice_voice)
    bob_keys = await profile_keys(stack, bob.openid or "", bob_voice)
    assert alice_keys[0].audio_sha256 == bob_keys[0].audio_sha256  # the very same recording

    # Both analysed: Bob's task never reads what was made from Alice's upload.
    assert (await completed_data(stack, alice, alice_voice))["speaker_profile"] == "computed"
    assert (await completed_data(stack, bob, bob_voice))["speaker_profile"] == "computed"
    # The samples' embeddings too (measured once the worker is idle), before the deletion.
    await eventually(lambda: stored(stack, [*alice_keys, *bob_keys]))

    assert (await alice.request("DELETE", f"/v1/voices/{alice_voice}")).status == 204
    for key in alice_keys:
        assert not await stack.store.exists(key.object_key), key
    for key in bob_keys:
        assert await stack.store.exists(key.object_key), key


class CountingAnalysis:
    """A deterministic analysis that takes a while (so lookups overlap) and counts its runs."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, prompt: Pcm) -> bytes:
        self.runs += 1
        time.sleep(0.05)
        return b"profile"


def scratch_key() -> ProfileKey:
    owner = f"o{uuid.uuid4().hex[:27]}"
    return ProfileKey(owner, "v_scratch", hashlib.sha256(owner.encode()).hexdigest(), "test", "1/a")


async def test_concurrent_lookups_of_one_voice_analyse_once(stack: Stack) -> None:
    analysis, key = CountingAnalysis(), scratch_key()
    with ThreadPoolExecutor(max_workers=2) as executor:
        cache = ProfileCache(stack.store, executor)
        profiles = await asyncio.gather(*(cache.get_or_analyse(key, PROMPT, analysis) for _ in range(4)))
        assert analysis.runs == 1
        assert sorted(p.source for p in profiles) == ["computed", "memory", "memory", "memory"]
        assert {p.data for p in profiles} == {b"profile"}
        assert await stack.store.get(key.object_key) == b"profile"

        cache.forget_all()
        assert (await cache.get_or_analyse(key, PROMPT, analysis)).source == "stored"
    assert analysis.runs == 1


async def test_memory_holds_a_bounded_number_of_profiles(stack: Stack) -> None:
    analysis, first, second = CountingAnalysis(), scratch_key(), scratch_key()
    with ThreadPoolExecutor(max_workers=1) as executor:
        cache = ProfileCache(stack.store, executor, capacity=1)
        for key in (first, second):
            assert (await cache.get_or_analyse(key, PROMPT, analysis)).source == "computed"
        assert (await cache.get_or_analyse(second, PROMPT, analysis)).source == "memory"
        assert (await cache.get_or_analyse(first, PROMPT, analysis)).source == "stored"  # evicted


async def test_an_unreachable_store_costs_an_analysis_not_the_task() -> None:
    store = ObjectStore(f"127.0.0.1:{free_port()}", "key", "secret", "bucket", secure=False, timeout_s=1)
    analysis, key = CountingAnalysis(), scratch_key()
    try:
        with ThreadPoolExecutor(max_workers=1) as executor:
            cache = ProfileCache(store, executor)
            assert (await cache.get_or_analyse(key, PROMPT, analysis)).source == "computed"
            assert (await cache.get_or_analyse(key, PROMPT, analysis)).source == "memory"
    finally:
        store.close()
    assert analysis.runs == 1
