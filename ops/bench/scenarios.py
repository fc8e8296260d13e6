"""What the benchmark measures, one function per question; each returns a JSON-ready dict.

Load comes from N concurrent clients, each a coroutine taking the next request from a shared list, so
that N requests are in flight at any time. End-to-end = POST /v1/syntheses until the client sees
`succeeded` on the task's SSE stream (a KV watch: pushed, not polled). Engine time is the worker's own
`synthesis_s` from the task's completed event; overhead = end-to-end - engine time.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ops.bench.harness import BenchError, BenchStack
from ops.bench.report import percentile, summary
from ops.client import ApiClient

SENTENCE = "今天天气很好，我们一起去公园散步吧。"
TASK_TIMEOUT_S = 120.0


class Texts:
    """Unique texts of one length, so that no fresh request is answered from the result cache."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, n: int) -> list[str]:
        start, self._next = self._next, self._next + n
        return [f"第{i:04d}句。{SENTENCE}" for i in range(start, start + n)]


@dataclass
class Sample:
    text: str
    status: int  # the submission's HTTP status
    latency_s: float
    task_id: str | None = None


async def run_concurrently(
    items: Sequence[str], clients: Sequence[Callable[[str], Awaitable[Sample]]]
) -> tuple[list[Sample], float]:
    """Every item through one of `clients`, each its own user, all busy at once; (samples, wall time).

    One user per client, as in production: a single user's requests in parallel would measure the
    per-user rate limit's contention instead of the pipeline.
    """
    queue = list(reversed(items))
    samples: list[Sample] = []

    async def client(one: Callable[[str], Awaitable[Sample]]) -> None:
        while queue:
            samples.append(await one(queue.pop()))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for one in clients[: len(items)]:
            group.create_task(client(one))
    return samples, time.perf_counter() - started


User = tuple[ApiClient, str]  # a logged-in client and its ready voice


async def new_user(http: aiohttp.ClientSession, url: str, sample_wav: bytes) -> User:
    """A logged-in client with one ready voice."""
    client = ApiClient(http, url)
    reply = await client.login(f"bench-{uuid.uuid4().hex}:{uuid.uuid4().hex[:8]}")
    if reply.status != 200:
        raise BenchError(f"login: {reply.status} {reply.body}")
    reply = await client.upload_voice(sample_wav)
    if reply.status != 201:
        raise BenchError(f"voice upload: {reply.status} {reply.body}")
    voice = await client.wait_voice(reply.body["voice_id"])
    if voice["status"] != "ready":
        raise BenchError(f"voice not ready: {voice}")
    return client, voice["voice_id"]


async def new_users(
    http: aiohttp.ClientSession, url: str, sample_wav: bytes, n: int, *, parallel: int = 8
) -> list[User]:
    """`n` users, each with its own ready voice."""
    gate = asyncio.Semaphore(parallel)

    async def one() -> User:
        async with gate:
            return await new_user(http, url, sample_wav)

    return list(await asyncio.gather(*(one() for _ in range(n))))


# Voices warmed up at a time: each waits for the analyses queued before it on the one worker, which
# must stay well inside a task's timeout (TASK_TIMEOUT_S).
WARM_UP_BATCH = 8


async def warm_up(users: Sequence[User], texts: Texts) -> None:
    """One untimed task per user's voice before anything is measured. The first completion tells the
    gateway which engine serves (which enables the result cache), and each voice's first task runs
    the engine's speaker analysis (seconds on the CPU engine; `bench voices` measures it): measured
    tasks find the profile cached, as every later task does."""
    await run_concurrently(texts.take(2), [synthesis(users[0])])
    for start in range(1, len(users), WARM_UP_BATCH):
        batch = users[start : start + WARM_UP_BATCH]
        await run_concurrently(texts.take(len(batch)), [synthesis(u) for u in batch])


def synthesis(user: User) -> Callable[[str], Awaitable[Sample]]:
    """Submit one text and follow it to its final status."""
    client, voice_id = user

    async def one(text: str) -> Sample:
        started = time.perf_counter()
        reply = await client.synthesize(text, voice_id, format="mp3")
        if reply.status == 202:
            task_id = reply.body["task_id"]
            events = await client.follow_events(task_id, timeout_s=TASK_TIMEOUT_S)
            final = events[-1] if events else {}
        elif reply.status == 200:  # answered from the result cache
            task_id, final = reply.body["task_id"], reply.body
        else:
            raise BenchError(f"submit: {reply.status} {reply.body}")
        latency_s = time.perf_counter() - started
        if final.get("status") != "succeeded":
            raise BenchError(f"task {task_id} ended {final.get('status')}: {final.get('error')}")
        return Sample(text, reply.status, latency_s, task_id)

    return one


async def pipeline_row(
    stack: BenchStack, users: Sequence[User], texts: list[str], concurrency: int
) -> dict[str, Any]:
    """Fresh syntheses at one concurrency: end-to-end, engine and overhead percentiles, throughput."""
    clients = [synthesis(u) for u in users[:concurrency]]
    samples, wall_s = await run_concurrently(texts, clients)
    ids = [s.task_id for s in samples if s.task_id]
    engine = await stack.engine_times(ids)
    e2e = [s.latency_s for s in samples]
    engine_s = [engine[s.task_id] for s in samples if s.task_id]
    overhead = [s.latency_s - engine[s.task_id] for s in samples if s.task_id]
    return {
        "concurrency": concurrency,
        "n": len(samples),
        **summary(e2e, "e2e"),
        **summary(engine_s, "engine"),
        **summary(overhead, "overhead"),
        "throughput_per_s": round(len(samples) / wall_s, 3),
        "wall_s": round(wall_s, 3),
    }


async def pipeline_overhead(
    stack: BenchStack, users: Sequence[User], batches: dict[int, list[str]]
) -> list[dict[str, Any]]:
    """(a) one row per concurrency, over one worker with no added engine delay."""
    return [await pipeline_row(stack, users, texts, c) for c, texts in batches.items()]


async def throughput(
    stack: BenchStack,
    users: Sequence[User],
    texts: Texts,
    *,
    n: int,
    delay_s: float,
    concurrency: int,
) -> dict[str, Any]:
    """(b) tasks/s with 1 then 2 workers, each worker's engine slowed by delay_s (a stand-in GPU)."""
    await stack.stop_workers()
    rows = {}
    for workers in (1, 2):
        await stack.start_worker(engine_delay_s=delay_s)
        rows[f"workers_{workers}"] = await pipeline_row(stack, users, texts.take(n), concurrency)
    await stack.stop_workers()
    one, two = rows["workers_1"]["throughput_per_s"], rows["workers_2"]["throughput_per_s"]
    return {
        "engine_delay_s": delay_s,
        "concurrency": concurrency,
        **rows,
        "scaling_2_over_1": round(two / one, 3) if one else None,
    }


async def cache(user: User, texts: list[str]) -> dict[str, Any]:
    """(c) each text fresh, then the identical request again: the repeat is a cache hit (200)."""
    one = synthesis(user)
    fresh = [await one(t) for t in texts]
    repeat = [await one(t) for t in texts]
    fresh_s = [s.latency_s for s in fresh]
    repeat_s = [s.latency_s for s in repeat]
    return {
        "n": len(texts),
        **summary(fresh_s, "fresh"),
        **summary(repeat_s, "repeat"),
        "fresh_statuses": sorted({s.status for s in fresh}),
        "repeat_statuses": sorted({s.status for s in repeat}),
        "fresh_over_repeat_p50": round(percentile(fresh_s, 50) / percentile(repeat_s, 50), 2),
    }


async def seed_baseline(
    http: aiohttp.ClientSession, url: str, prompt_wav: bytes, batches: dict[int, list[str]]
) -> list[dict[str, Any]]:
    """(d) the seed design on the same texts: one blocking POST /tts per text, a subprocess each."""
    prompt_b64 = base64.b64encode(prompt_wav).decode()

    async def one(text: str) -> Sample:
        started = time.perf_counter()
        async with http.post(f"{url}/tts", json={"text": text, "prompt_audio": prompt_b64}) as response:
            body = await response.json()
        if response.status != 200:
            raise BenchError(f"seed baseline: {response.status} {body}")
        return Sample(text, response.status, time.perf_counter() - started)

    rows = []
    for concurrency, texts in batches.items():
        samples, wall_s = await run_concurrently(texts, [one] * concurrency)
        rows.append(
            {
                "concurrency": concurrency,
                "n": len(samples),
                **summary([s.latency_s for s in samples], "e2e"),
                "throughput_per_s": round(len(samples) / wall_s, 3),
                "wall_s": round(wall_s, 3),
            }
        )
    return rows


async def gateway_accept(
    stack: BenchStack, users: Sequence[User], texts: list[str], concurrency: int
) -> dict[str, Any]:
    """(e) POST /v1/syntheses alone, no worker running: how fast the gateway accepts (202) work."""
    await stack.stop_workers()

    def submitter(user: User) -> Callable[[str], Awaitable[Sample]]:
        async def one(text: str) -> Sample:
            started = time.perf_counter()
            reply = await user[0].synthesize(text, user[1], format="mp3")
            return Sample(text, reply.status, time.perf_counter() - started)

        return one

    samples, wall_s = await run_concurrently(texts, [submitter(u) for u in users[:concurrency]])
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    accepted = [s.latency_s for s in samples if s.status == 202]
    return {
        "concurrency": concurrency,
        "n": len(samples),
        "statuses": statuses,
        **summary(accepted, "accept"),
        "accepted_per_s": round(len(accepted) / wall_s, 2),
        "wall_s": round(wall_s, 3),
    }
