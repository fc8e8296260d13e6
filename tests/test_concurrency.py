"""Many users at once: 120 simultaneous tasks on 20 distinct voices, and every user gets their own
result (the peer-server failure in DESIGN.md: concurrent requests getting someone else's audio)."""

from __future__ import annotations

import asyncio
import functools
import json

import pytest
from stack import SAMPLE_TEXT, Stack, speech, speech_sample

from common.audio import decode_audio, read_metadata
from ops.client import ApiClient
from synth_worker.labels import with_explicit_label

USERS = 20
TASKS_PER_USER = 6
FILLER = "天气晴朗风和日丽"


def text_for(user: int, task: int) -> str:
    """A distinct text per task, of a length that varies, so a swapped result would not fit its text."""
    n = user * TASKS_PER_USER + task
    return f"第{user}位用户的第{task}句话，" + FILLER[: 1 + n % len(FILLER)] + "。"


@functools.cache
def reference_duration_s(text: str) -> float:
    """What the espeak engine makes of `text`, with the audible AIGC label the stack's worker adds
    (AIGC_EXPLICIT_LABEL's default): the worker's output for it is this, encoded."""
    return with_explicit_label(speech(text), "voice").duration_s


async def owner_with_voice(stack: Stack, user: int) -> tuple[ApiClient, str]:
    """A user with a voice of their own: each reads a different sentence, so the samples differ."""
    client = await stack.user(f"crowd{user}")
    sample = speech_sample("wav", text=f"我是第{user}位用户。{SAMPLE_TEXT}")
    voice = await stack.ready_voice(client, sample)
    return client, voice["voice_id"]


@pytest.mark.timeout(300)
async def test_120_simultaneous_tasks_each_get_their_own_result(stack: Stack) -> None:
    owners = await asyncio.gather(*(owner_with_voice(stack, u) for u in range(USERS)))
    assert len({voice_id for _, voice_id in owners}) == USERS
    jobs = [(u, t) for u in range(USERS) for t in range(TASKS_PER_USER)]

    replies = await asyncio.gather(*(owners[u][0].synthesize(text_for(u, t), owners[u][1]) for u, t in jobs))
    assert [r.status for r in replies] == [202] * len(jobs), [r.body for r in replies if r.status != 202]
    task_ids = [r.body["task_id"] for r in replies]
    assert len(set(task_ids)) == len(jobs)
    # (the owner's client, the task id), in the order of `jobs`
    owned = [(owners[u][0], task_id) for (u, _), task_id in zip(jobs, task_ids, strict=True)]

    # A bound for a hang, not a speed goal (speed is `ops bench`'s): the stack's one worker has about
    # 100 s of work here on 2 cores, the audible AIGC label's encoding included (~40 ms a task).
    tasks = await asyncio.gather(*(user.wait_task(task_id, timeout_s=240) for user, task_id in owned))
    assert [t["status"] for t in tasks] == ["succeeded"] * len(jobs)

    async def fetch(user: ApiClient, task_id: str) -> bytes:
        reply = await user.request("GET", f"/v1/syntheses/{task_id}/audio")
        assert reply.status == 200, (task_id, reply.status)
        return reply.body

    audio = await asyncio.gather(*(fetch(user, task_id) for user, task_id in owned))
    for (u, t), task, data in zip(jobs, tasks, audio, strict=True):
        assert task["text"].startswith(f"第{u}位用户的第{t}句话")
        assert task["voice_id"] == owners[u][1]
        # The file names its own task (the AIGC label the worker writes), and it is the speech of
        # its own text: a result handed to the wrong task would fail one or the other.
        assert json.loads(read_metadata(data)["AIGC"])["ProduceID"] == task["task_id"]
        expected_s = reference_duration_s(task["text"])
        assert abs(decode_audio(data).duration_s - expected_s) < 0.05 + 0.02 * expected_s, task["text"]

    # No user reaches another's task, by id or by its audio path: 404, as for a task that does not exist.
    for u in range(USERS):
        other = owners[(u + 1) % USERS][0]
        task_id = task_ids[u * TASKS_PER_USER]
        assert (await other.request("GET", f"/v1/syntheses/{task_id}")).status == 404
        assert (await other.request("GET", f"/v1/syntheses/{task_id}/audio")).status == 404
        listed = (await other.request("GET", "/v1/syntheses?limit=100")).body["tasks"]
        assert task_id not in {t["task_id"] for t in listed}


async def test_one_users_parallel_submissions_are_all_accepted(stack: Stack) -> None:
    """A user's own burst must not trip over shared state (a shared rate counter once made 40 parallel
    submissions exhaust their compare-and-set retries and answer 500)."""
    user = await stack.user()
    voice = await stack.ready_voice(user)
    replies = await asyncio.gather(*(user.synthesize(f"并发第{i}句。", voice["voice_id"]) for i in range(40)))
    assert [r.status for r in replies] == [202] * 40, [r.body for r in replies if r.status != 202]
    # Leave no work in flight for the tests after this one.
    finished = await asyncio.gather(*(user.wait_task(r.body["task_id"]) for r in replies))
    assert {t["status"] for t in finished} == {"succeeded"}
