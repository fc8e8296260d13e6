"""The right to erasure: `DELETE /v1/me` leaves nothing of the user in S3 or KV, refuses their old token
and links, and the audit log keeps the timeline but not their words (crypto-shredding)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from stack import Stack, queued_job
from test_ops_cli import run_ops, stack_env
from test_rejections import assert_error
from test_speaker_profiles import fresh_text
from test_worker_jobs import StandInMessage

from common.audio import Pcm
from events import names
from events.bus import KV_BUCKETS, USER_KEY_SLACK_S
from events.envelope import Envelope
from events.records import TaskRecord
from events.replay import open_sealed, read_events, task_timeline
from events.sealing import ERASED, SEALED_FIELDS, UserKeys, is_sealed
from events.state import SharedState
from ops.client import ApiClient
from storage.keys import owner_prefixes
from synth_worker.engines.base import SynthesisRequest
from synth_worker.engines.espeak import EspeakEngine
from synth_worker.jobs import JobRunner
from synth_worker.metrics import WorkerMetrics

pytestmark = pytest.mark.stack

# What may stay of an erased user in KV: the time until which their tokens are revoked (it expires
# with the last token it refuses).
ALLOWED_TRACES = {f"$KV.{names.REVOKED_SESSIONS_BUCKET}.{{openid}}"}


async def objects_of(stack: Stack, openid: str) -> list[str]:
    """Every S3 key under the user's prefixes (samples, features, outputs), straight from S3."""

    def listing() -> list[str]:
        client, bucket = stack.store._client, stack.store.bucket
        return sorted(
            obj.object_name
            for prefix in owner_prefixes(openid)
            for obj in client.list_objects(bucket, prefix=prefix, recursive=True)
        )

    return await asyncio.to_thread(listing)


async def kv_traces_of(stack: Stack, openid: str) -> set[str]:
    """Every KV subject in any bucket whose key names the user, delete markers included."""
    traces = set()
    for bucket in KV_BUCKETS:
        info = await stack.bus.js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.>")
        traces |= {subject for subject in info.state.subjects or {} if openid in subject}
    return traces


async def erase(client: ApiClient) -> None:
    reply = await client.request("DELETE", "/v1/me")
    assert reply.status == 204, reply.body


async def used_account(stack: Stack) -> tuple[ApiClient, dict, list[dict], str]:
    """A user with a ready voice, two finished tasks (one under an Idempotency-Key, so a claim and
    a cached result exist too) and a third task still queued behind a held voice: (client, voice,
    finished tasks, the text of the first)."""
    client = await stack.user("erased")
    voice = await stack.ready_voice(client, name="我的声音", prompt_text="我是本人，同意用我的声音生成语音")
    text = f"请删掉我说过的这句话{uuid.uuid4().hex[:6]}"
    first = await client.synthesize(text, voice["voice_id"], idempotency_key=uuid.uuid4().hex)
    second = await client.synthesize(fresh_text(), voice["voice_id"], format="wav")
    tasks = [await client.wait_task(reply.body["task_id"]) for reply in (first, second)]
    assert [task["status"] for task in tasks] == ["succeeded", "succeeded"], tasks
    return client, voice, tasks, text


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


async def streamed_audio_of(stack: Stack, openid: str) -> int:
    """How many audio chunks of the user's tasks the audio stream holds (events/audio.py)."""
    info = await stack.bus.js.stream_info(
        names.AUDIO_STREAM, subjects_filter=names.audio_subjects(openid, "*")
    )
    return sum((info.state.subjects or {}).values())


async def test_erasure_leaves_nothing_and_the_log_forgets_the_words(stack: Stack) -> None:
    client, voice, tasks, text = await used_account(stack)
    openid = client.openid or ""
    bystander = await stack.user()
    their_voice = await stack.ready_voice(bystander)

    # Sealed from the start: the text never stands in clear in the stream, yet replay reads it.
    timeline = await task_timeline(stack.bus, tasks[0]["task_id"])
    [requested] = [e for e in timeline if e.type == names.EventType.SYNTHESIS_REQUESTED]
    assert is_sealed(requested.data["text"]) and is_sealed(requested.data["prompt_text"])
    assert text not in requested.to_json().decode()
    code, replayed = await run_ops("replay", "task", tasks[0]["task_id"], env=stack_env(stack))
    assert code == 0 and f"text={text}" in replayed, replayed
    assert await objects_of(stack, openid) and await kv_traces_of(stack, openid)
    assert await streamed_audio_of(stack, openid) > 0

    await erase(client)

    assert await objects_of(stack, openid) == []
    assert await streamed_audio_of(stack, openid) == 0  # the chunks streams read, gone too
    assert await kv_traces_of(stack, openid) == {t.format(openid=openid) for t in ALLOWED_TRACES}
    # The old token, and every link handed out before, lead nowhere.
    assert_error(await client.request("GET", "/v1/voices"), 401, "unauthorized")
    anonymous = stack.client()
    for url in (voice["audio_url"], *(task["audio_url"] for task in tasks)):
        reply = await anonymous.request("GET", relative(url))
        assert reply.status in (404, 410), (url, reply.status)
    # The timeline stays; the words do not, whoever reads the stream.
    code, replayed = await run_ops("replay", "task", tasks[0]["task_id"], env=stack_env(stack))
    assert code == 0 and f"text={ERASED}" in replayed and text not in replayed, replayed
    assert "tts.synthesis.completed" in replayed
    keys = SharedState(stack.bus).user_keys
    for task in tasks:
        for event in await open_sealed(await task_timeline(stack.bus, task["task_id"]), keys):
            assert text not in event.to_json().decode()
            assert all(event.data.get(field, ERASED) == ERASED for field in SEALED_FIELDS), event
    erased = [e async for e in read_events(stack.bus, subjects=names.EventType.USER_ERASED)]
    [counts] = [e.data for e in erased if e.openid == openid]
    assert (counts["voices"], counts["tasks"]) == (1, 2) and counts["objects"] >= 3, (
        counts
    )  # sample, 2 outputs
    # Nobody else was touched; logging in again starts an empty account.
    assert (await bystander.request("GET", f"/v1/voices/{their_voice['voice_id']}")).status == 200
    again = stack.client()
    assert (await again.login(f"erased:{uuid.uuid4().hex[:8]}")).status == 200
    assert again.openid == openid
    assert (await again.request("GET", "/v1/voices")).body == {"voices": []}
    assert (await again.request("GET", "/v1/syntheses")).body == {"tasks": []}


async def test_erasure_needs_a_token(stack: Stack) -> None:
    assert_error(await stack.client().request("DELETE", "/v1/me"), 401, "unauthorized")


async def test_erasing_twice_and_an_empty_account(stack: Stack) -> None:
    client = await stack.user("erased")
    await erase(client)
    again = stack.client()
    assert (await again.login(f"erased:{uuid.uuid4().hex[:8]}")).status == 200
    await erase(again)
    assert await kv_traces_of(stack, again.openid or "") <= {
        t.format(openid=again.openid) for t in ALLOWED_TRACES
    }


class HeldEspeak(EspeakEngine):
    """Espeak that, once a synthesis starts, waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def synthesize(self, request: SynthesisRequest) -> Pcm:
        self._hold()
        return super().synthesize(request)

    def synthesize_stream(self, request: SynthesisRequest) -> Iterator[Pcm]:
        self._hold()
        yield from super().synthesize_stream(request)

    def _hold(self) -> None:
        self.started.set()
        if not self.release.wait(60):
            raise TimeoutError("the test never released the synthesis")


@dataclass
class QueuedJob:
    """A fresh user's queued task and its job, with a runner on a held engine to hand it to."""

    client: ApiClient
    owner: str
    task: TaskRecord
    event: Envelope
    engine: HeldEspeak
    runner: JobRunner


@contextlib.asynccontextmanager
async def held_job(stack: Stack) -> AsyncIterator[QueuedJob]:
    client = await stack.user()
    voice = await stack.ready_voice(client)
    owner, state = client.openid or "", SharedState(stack.bus)
    task, event = await queued_job(state, owner, voice["voice_id"], text=fresh_text(), trace_id="tr_erasure")
    engine = HeldEspeak()
    with ThreadPoolExecutor(max_workers=1) as executor:
        runner = JobRunner(
            bus=stack.bus, state=state, store=stack.store, engine=engine, executor=executor,
            metrics=WorkerMetrics(),
        )  # fmt: skip
        try:
            yield QueuedJob(client, owner, task, event, engine, runner)
        finally:
            engine.release.set()


async def test_a_job_running_during_erasure_leaves_no_audio_behind(stack: Stack) -> None:
    """Erasure sweeps S3 before the job stores its audio: the job finds its task gone and deletes it."""
    message = StandInMessage(num_delivered=1)
    async with held_job(stack) as queued:
        job = asyncio.create_task(queued.runner(queued.event, message))
        assert await asyncio.to_thread(queued.engine.started.wait, 30)
        await erase(queued.client)
        queued.engine.release.set()
        await job
    assert message.calls[-1] == "ack", message.calls
    assert await objects_of(stack, queued.owner) == []
    assert await kv_traces_of(stack, queued.owner) == {t.format(openid=queued.owner) for t in ALLOWED_TRACES}
    types = [e.type for e in await task_timeline(stack.bus, queued.task.task_id)]
    assert names.EventType.SYNTHESIS_COMPLETED not in types


async def test_a_job_of_an_erased_user_is_dropped_without_synthesis(stack: Stack) -> None:
    """Its key is gone, so its sealed transcript cannot be read: nothing is synthesised."""
    message = StandInMessage(num_delivered=1)
    async with held_job(stack) as queued:
        # As erasure does it, but with the task still there: the middle of a race.
        await SharedState(stack.bus).user_keys.destroy(queued.owner)
        queued.engine.release.set()
        await queued.runner(queued.event, message)
    assert not queued.engine.started.is_set()
    assert message.calls[-1] == "term", message.calls


# --- the keys and the buckets' lifetimes ----------------------------------------------------------------


async def test_user_keys_are_made_once_renewed_and_destroyed(stack: Stack) -> None:
    now = [1_000_000.0]
    keys = UserKeys(stack.bus, clock=lambda: now[0])
    owner = f"o{uuid.uuid4().hex[:27]}"
    assert await keys.find(owner) is None
    made = await asyncio.gather(*(keys.key_for(owner) for _ in range(5)))
    assert len(set(made)) == 1 and len(made[0]) == 32  # parallel first uses agree on one key
    kv = stack.bus.kv(names.USER_KEYS_BUCKET)
    revision = (await kv.get(owner)).revision
    assert await keys.key_for(owner) == made[0] and (await kv.get(owner)).revision == revision
    now[0] += USER_KEY_SLACK_S + 1  # a day later, the key is written again: its TTL starts anew
    assert await keys.key_for(owner) == made[0] and (await kv.get(owner)).revision > revision
    await keys.destroy(owner)
    assert await keys.find(owner) is None
    assert await keys.key_for(owner) != made[0]  # a new account, a new key


async def test_tasks_results_and_keys_live_as_long_as_the_settings_say(stack: Stack) -> None:
    async def max_age_s(bucket: str) -> float:
        return (await stack.bus.js.stream_info(f"KV_{bucket}")).config.max_age or 0.0

    settings = stack.settings
    assert await max_age_s(names.TASKS_BUCKET) == settings.output_retention_days * 86400
    assert await max_age_s(names.RESULTS_BUCKET) == settings.output_retention_days * 86400
    assert await max_age_s(names.USER_KEYS_BUCKET) == settings.audit_max_age_s + USER_KEY_SLACK_S
