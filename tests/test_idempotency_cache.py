"""Idempotency-Key on POST /v1/syntheses, and the result cache: a repeat never makes a second job, and an
identical request after a success is answered at once from the first one's audio, without a worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from multidict import CIMultiDict
from stack import Stack
from test_rejections import assert_error, nothing_changed, quiet_stream, risky_word

from common.ids import new_id
from events.envelope import new_event
from events.names import EventType
from events.replay import task_timeline
from events.state import SharedState
from ops.client import ApiClient, Reply, eventually


@dataclass(frozen=True)
class Speaker:
    client: ApiClient
    voice_id: str

    async def say(self, text: str, **options: Any) -> Reply:
        return await self.client.synthesize(text, self.voice_id, **options)


def fresh_text() -> str:
    """A sentence no other request has asked for, so each test starts with an empty cache."""
    return f"你好，这是第{uuid.uuid4().hex[:6]}句话。"


async def ready_speaker(stack: Stack) -> Speaker:
    client = await stack.user()
    voice = await stack.ready_voice(client)
    return Speaker(client, voice["voice_id"])


@pytest.fixture(scope="module")
async def speaker(stack: Stack) -> Speaker:
    """A user with a ready voice, after one finished task: the gateway learns the engine's release
    from completed events, and caches nothing before it knows it."""
    speaker = await ready_speaker(stack)
    first = await speaker.say(fresh_text())
    assert (await speaker.client.wait_task(first.body["task_id"]))["status"] == "succeeded"
    return speaker


async def completed_timeline(stack: Stack, task_id: str) -> list[str]:
    """The task's event types once its completion is on the stream (the worker publishes it just
    after the task's state says succeeded)."""

    async def with_completion() -> list[str] | None:
        types = [e.type for e in await task_timeline(stack.bus, task_id)]
        return types if "tts.synthesis.completed" in types else None

    return await eventually(with_completion)


async def succeeded(speaker: Speaker, reply: Reply) -> dict[str, Any]:
    assert reply.status == 202, reply.body
    task = await speaker.client.wait_task(reply.body["task_id"])
    assert task["status"] == "succeeded", task
    return task


# --- Idempotency-Key -----------------------------------------------------------------------------------


async def test_a_repeat_returns_the_same_task(stack: Stack, speaker: Speaker) -> None:
    text, key = fresh_text(), uuid.uuid4().hex
    first = await speaker.say(text, idempotency_key=key)
    assert first.status == 202, first.body
    again = await speaker.say(text, idempotency_key=key)
    task_id = first.body["task_id"]
    assert again.body["task_id"] == task_id
    # 202 while the task runs, 200 once it has finished.
    assert again.status == (200 if again.body["status"] == "succeeded" else 202), again.body
    await speaker.client.wait_task(task_id)
    finished = await speaker.say(text, idempotency_key=key)
    assert (finished.status, finished.body["task_id"], finished.body["status"]) == (200, task_id, "succeeded")
    assert finished.body["audio_url"]
    types = await completed_timeline(stack, task_id)
    assert types.count("tts.synthesis.requested") == 1, types


async def test_concurrent_repeats_make_one_task(stack: Stack, speaker: Speaker) -> None:
    text, key = fresh_text(), uuid.uuid4().hex
    before = await listed_task_ids(speaker.client)
    replies = await asyncio.gather(*(speaker.say(text, idempotency_key=key) for _ in range(10)))
    assert {r.status for r in replies} <= {200, 202}, [r.body for r in replies]
    [task_id] = {r.body["task_id"] for r in replies}
    assert await listed_task_ids(speaker.client) - before == {task_id}
    await speaker.client.wait_task(task_id)
    types = await completed_timeline(stack, task_id)
    assert types.count("tts.synthesis.requested") == 1, types
    assert types.count("tts.synthesis.started") == 1, types


async def listed_task_ids(client: ApiClient) -> set[str]:
    reply = await client.request("GET", "/v1/syntheses?limit=100")
    return {t["task_id"] for t in reply.body["tasks"]}


@pytest.mark.parametrize(
    "change", [{"text": "另一句话。"}, {"format": "wav"}, {"speed": 1.5}, {"notify": True}], ids=str
)
async def test_the_same_key_with_another_body_conflicts(speaker: Speaker, change: dict[str, Any]) -> None:
    text, key = fresh_text(), uuid.uuid4().hex
    first = await speaker.say(text, idempotency_key=key)
    assert first.status == 202, first.body
    other = {"text": text} | change
    assert_error(await speaker.say(**other, idempotency_key=key), 409, "idempotency_conflict")
    await speaker.client.wait_task(first.body["task_id"])


async def test_keys_belong_to_their_user(stack: Stack, speaker: Speaker) -> None:
    text, key = fresh_text(), uuid.uuid4().hex
    other = await ready_speaker(stack)
    mine, theirs = await speaker.say(text, idempotency_key=key), await other.say(text, idempotency_key=key)
    assert mine.status == theirs.status == 202, (mine.body, theirs.body)
    assert mine.body["task_id"] != theirs.body["task_id"]
    for who, reply in ((speaker, mine), (other, theirs)):
        assert (await who.client.wait_task(reply.body["task_id"]))["status"] == "succeeded"


@pytest.mark.parametrize(
    "values",
    [[""], ["k" * 256], ["clé"], ["tab\tinside"], ["one", "two"]],
    ids=["empty", "too_long", "not_ascii", "control", "twice"],
)
async def test_an_unusable_key_is_refused(stack: Stack, speaker: Speaker, values: list[str]) -> None:
    headers = CIMultiDict([("Authorization", f"Bearer {speaker.client.token}")])
    for value in values:
        headers.add("Idempotency-Key", value)
    await quiet_stream(stack)
    async with nothing_changed(stack, speaker.client):
        async with stack.http.post(
            f"{stack.url}/v1/syntheses",
            json={"text": fresh_text(), "voice_id": speaker.voice_id},
            headers=headers,
        ) as response:
            reply = Reply(response.status, await response.json(), dict(response.headers))
        assert_error(reply, 400, "invalid_request")


async def test_the_longest_key_with_any_printable_characters_works(speaker: Speaker) -> None:
    key = ("a/b.c*>~ " * 40)[:255]
    first, again = [await speaker.say("键里什么都能有。", idempotency_key=key) for _ in range(2)]
    assert first.status == 202, first.body
    assert again.body["task_id"] == first.body["task_id"]
    await speaker.client.wait_task(first.body["task_id"])


async def test_a_refused_request_leaves_its_key_free(stack: Stack, speaker: Speaker) -> None:
    """Refused before any task existed, nothing holds the key: the client may fix the text and retry."""
    key = uuid.uuid4().hex
    await quiet_stream(stack)
    async with nothing_changed(stack, speaker.client):
        refused = await speaker.say(f"请帮我说{risky_word(stack)}", idempotency_key=key)
        assert_error(refused, 422, "text_rejected")
    fixed = await speaker.say(fresh_text(), idempotency_key=key)
    assert fixed.status == 202, fixed.body
    await speaker.client.wait_task(fixed.body["task_id"])


async def test_a_key_abandoned_half_way_is_taken_over(stack: Stack) -> None:
    """A claim whose task never appeared (its gateway died after claiming) is taken over once its lease
    is over, under the task id it named, so a late original could only collide with it."""
    speaker = await ready_speaker(stack)
    text, key = fresh_text(), uuid.uuid4().hex
    first = await succeeded(speaker, await speaker.say(text, idempotency_key=key))
    state = SharedState(stack.bus)
    [claim_key] = await state.idempotency.keys(f"{speaker.client.openid}.*")
    claim = await state.idempotency.get(claim_key)
    assert claim is not None and claim.task_id == first["task_id"]
    abandoned = msgspec.structs.replace(claim, task_id=new_id("t"), claimed_at_s=time.time() - 3600)
    await state.idempotency.put(claim_key, abandoned)

    retried = await speaker.say(text, idempotency_key=key)

    # 200 when the result cache answers it (the engine's release was known at the first request).
    assert retried.status in (200, 202), retried.body
    assert retried.body["task_id"] == abandoned.task_id
    assert (await speaker.client.wait_task(abandoned.task_id))["status"] == "succeeded"


# --- the result cache ----------------------------------------------------------------------------------


async def test_an_identical_request_is_answered_from_the_cache(stack: Stack, speaker: Speaker) -> None:
    text = fresh_text()
    original = await succeeded(speaker, await speaker.say(text, format="wav", speed=1.2))
    audio = await speaker.client.request("GET", original["audio_url"])

    cached = await speaker.say(text, format="wav", speed=1.2)
    assert (cached.status, cached.body["status"]) == (200, "succeeded"), cached.body
    assert cached.body["task_id"] != original["task_id"]
    assert cached.body["audio_url"] != original["audio_url"]
    assert cached.body["duration_s"] == original["duration_s"]
    again = await speaker.client.request("GET", cached.body["audio_url"])
    assert (again.status, again.headers["Content-Type"]) == (200, "audio/wav")
    assert again.body == audio.body
    # No worker touched it: the stream holds only its completion, which names its source.
    [event] = await task_timeline(stack.bus, cached.body["task_id"])
    assert event.type == "tts.synthesis.completed"
    assert event.data["cached_from"] == original["task_id"]


@pytest.mark.parametrize(
    "change",
    [{"text": "换一句话。"}, {"format": "mp3"}, {"speed": 1.0}, {"mode": "instruct", "instruct": "happy"}],
    ids=str,
)
async def test_any_difference_is_synthesised_afresh(speaker: Speaker, change: dict[str, Any]) -> None:
    text = fresh_text()
    await succeeded(speaker, await speaker.say(text, format="wav", speed=1.2))
    changed = {"text": text, "format": "wav", "speed": 1.2} | change
    await succeeded(speaker, await speaker.say(**changed))  # 202: a new job


async def test_another_users_identical_request_is_not_a_hit(stack: Stack, speaker: Speaker) -> None:
    """Same text, same recording: the cache is still per user."""
    text = fresh_text()
    await succeeded(speaker, await speaker.say(text))
    other = await ready_speaker(stack)
    await succeeded(other, await other.say(text))


async def test_a_new_engine_release_ends_the_cache(stack: Stack, speaker: Speaker) -> None:
    """Results of one engine release are never served once a completion shows another one running."""
    text = fresh_text()
    await succeeded(speaker, await speaker.say(text))
    await stack.bus.publish(
        new_event(
            EventType.SYNTHESIS_COMPLETED,
            openid=speaker.client.openid or "",
            trace_id=uuid.uuid4().hex,
            task_id=f"t_release{uuid.uuid4().hex}",
            data={"engine": "espeak", "engine_version": "a-newer-release"},
        )
    )
    # The worker's completion of this fresh job puts the real release back for later tests.
    await succeeded(speaker, await speaker.say(text))
