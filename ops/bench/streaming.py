"""`python -m ops bench streaming`: time to first audio, streamed over HTTP and over the WebSocket,
against the engine's own time to its first piece, at 1, 8 and 32 clients; and a long text streamed
against the same text waited for whole.

Same stack as `bench pipeline` (child processes on free ports, ops/bench/harness.py), one worker with
the CPU engine. The engine's first piece (`first_audio_s` of each completed event) is measured by the
worker itself, so time to first audio minus it is what the pipeline adds before the user hears
anything: submission, queueing for the worker, prompt, publishing the chunk, the gateway's listener.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp

from ops.bench import scenarios
from ops.bench.harness import BenchStack, bench_stack, run_and_report
from ops.bench.report import machine, ms, ratio, summary, table
from ops.samples import speech_sample

log = logging.getLogger(__name__)

CLIENTS = {1: 20, 8: 48, 32: 96}  # concurrency -> requests
QUICK_CLIENTS = {1: 3, 4: 8}
# 200 characters, about 50 seconds of speech.
_PARAGRAPH = (
    "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐，笑容如花儿般绽放。"
    "我们约好明年春天一起去江南看油菜花，坐着小船穿过古镇的石桥，听船夫唱一段地道的民歌，再去茶馆喝一壶新茶。"
    "到了傍晚，夕阳把河面染成金色，岸边的灯笼一盏一盏亮起来，我们一边散步一边聊起小时候的趣事，直到夜深才慢慢走回客栈休息。"
    "第二天清晨，我们早早起床，在湖边看日出，薄雾像轻纱一样笼罩着水面，远处传来几声鸟鸣，一切都那么安静美好。"
)
LONG_TEXT = _PARAGRAPH[:199] + "。"
LONG_RUNS, QUICK_LONG_RUNS = 5, 2


async def http_first_audio(user: scenarios.User, text: str) -> tuple[str, float, float]:
    """POST, then the task's stream_url: (task id, seconds to the first audio byte, to the last)."""
    client, voice_id = user
    started = time.perf_counter()
    reply = await client.synthesize(text, voice_id, format="mp3")
    if reply.status not in (200, 202):
        raise scenarios.BenchError(f"submit: {reply.status} {reply.body}")
    async with client.http.get(reply.body["stream_url"] + "&format=pcm") as response:
        if response.status != 200:
            raise scenarios.BenchError(f"stream: {response.status}")
        first = None
        async for _chunk in response.content.iter_any():
            first = first if first is not None else time.perf_counter() - started
    if first is None:
        raise scenarios.BenchError(f"task {reply.body['task_id']}: the stream carried no audio")
    return reply.body["task_id"], first, time.perf_counter() - started


async def socket_first_audio(
    socket: aiohttp.ClientWebSocketResponse, user: scenarios.User, text: str
) -> tuple[str, float, float]:
    """One request on an open WebSocket: (task id, seconds to the first binary frame, to `end`)."""
    _client, voice_id = user
    started = time.perf_counter()
    await socket.send_str(json.dumps({"type": "synthesize", "text": text, "voice_id": voice_id}))
    task_id, first = "", None
    async with asyncio.timeout(scenarios.TASK_TIMEOUT_S):
        while True:
            message = await socket.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                first = first if first is not None else time.perf_counter() - started
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                raise scenarios.BenchError(f"socket closed: {message}")
            body = json.loads(message.data)
            if body["type"] == "task":
                task_id = body["task"]["task_id"]
            elif body["type"] == "error":
                raise scenarios.BenchError(f"socket request: {body['error']}")
            elif body["type"] == "end":
                break
    if first is None:
        raise scenarios.BenchError(f"task {task_id}: no audio on the socket")
    return task_id, first, time.perf_counter() - started


async def first_audio_row(
    stack: BenchStack, users: list[scenarios.User], texts: list[str], concurrency: int, transport: str
) -> dict[str, Any]:
    """Fresh texts from `concurrency` users at once over `transport` ("http" or "socket")."""
    queue = list(reversed(texts))
    results: list[tuple[str, float, float]] = []

    async def client(user: scenarios.User) -> None:
        if transport == "http":
            while queue:
                results.append(await http_first_audio(user, queue.pop()))
            return
        headers = {"Authorization": f"Bearer {user[0].token}"}
        async with user[0].http.ws_connect(f"{stack.gateway_url}/v1/stream", headers=headers) as socket:
            while queue:
                results.append(await socket_first_audio(socket, user, queue.pop()))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for user in users[:concurrency]:
            group.create_task(client(user))
    wall_s = time.perf_counter() - started
    ids = [task_id for task_id, _, _ in results]
    engine_first = await stack.engine_times(ids, first_audio=True)
    ttfa = [first for _, first, _ in results]
    added = [first - engine_first[task_id] for task_id, first, _ in results]
    # Beyond waiting for the one worker (the completed event's timings_ms.queue).
    queued = [stack.queue_s.get(task_id, 0.0) for task_id, _, _ in results]
    beyond = [a - q for a, q in zip(added, queued, strict=True)]
    return {
        "transport": transport,
        "concurrency": concurrency,
        "n": len(results),
        **summary(ttfa, "ttfa"),
        **summary(list(engine_first.values()), "engine_first"),
        **summary(added, "added"),
        **summary(queued, "queue"),
        **summary(beyond, "beyond_queue"),
        "throughput_per_s": round(len(results) / wall_s, 3),
    }


async def long_text(stack: BenchStack, user: scenarios.User, runs: int) -> dict[str, Any]:
    """The 200-character text: first audio when streamed against the end-to-end wait when not."""
    streamed, whole = [], []
    salt = time.time_ns() % 1000  # a new text each run of the benchmark, never a cache hit

    def fresh(n: int) -> str:
        prefix = f"{salt:03d}{n:02d}"
        return prefix + LONG_TEXT[len(prefix) :]  # still 200 characters, TEXT_MAX_CHARS' default

    for run in range(runs):
        _, first, _ = await http_first_audio(user, fresh(2 * run))
        streamed.append(first)
        sample = await scenarios.synthesis(user)(fresh(2 * run + 1))
        whole.append(sample.latency_s)
    stream_p50 = summary(streamed, "streamed_ttfa")
    whole_p50 = summary(whole, "whole_e2e")
    return {
        "chars": len(LONG_TEXT),
        "runs": runs,
        **stream_p50,
        **whole_p50,
        "ratio_p50": ratio(stream_p50["streamed_ttfa_p50_s"], whole_p50["whole_e2e_p50_s"]),
    }


async def measure(base_dir: Path, *, quick: bool) -> dict[str, Any]:
    clients = QUICK_CLIENTS if quick else CLIENTS
    texts = scenarios.Texts()
    sample_wav = speech_sample("wav")
    started = time.time()
    connector = aiohttp.TCPConnector(limit=0)
    async with bench_stack(base_dir) as stack, aiohttp.ClientSession(connector=connector) as http:
        await stack.start_worker()
        users = await scenarios.new_users(http, stack.gateway_url, sample_wav, max(clients))
        await scenarios.warm_up(users, texts)
        rows = []
        for transport in ("http", "socket"):
            for concurrency, n in clients.items():
                log.info("first audio over %s at %d clients", transport, concurrency)
                rows.append(await first_audio_row(stack, users, texts.take(n), concurrency, transport))
        log.info("a long text, streamed and whole")
        long = await long_text(stack, users[0], QUICK_LONG_RUNS if quick else LONG_RUNS)
    return {
        "meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 1),
            "mode": "quick" if quick else "default",
            "engine": "espeak",
            "machine": machine(),
            "ttfa": "POST /v1/syntheses (or the socket's synthesize) until the first audio byte",
        },
        "first_audio": rows,
        "long_text": long,
    }


def render(results: dict[str, Any]) -> str:
    m = results["meta"]["machine"]
    out = [
        f"VoiceRelay streaming benchmark ({results['meta']['mode']}), engine espeak, "
        f"{m['nproc']} CPUs {m['cpu_model']}",
        "",
        "Time to first audio (ms): TTFA at the client; the engine's own first piece; what the pipeline"
        " adds; of that, waiting for the one worker, and the rest",
    ]
    header = [
        "transport", "clients", "n", "TTFA p50", "TTFA p99", "engine p50", "added p50", "added p99",
        "queue p50", "beyond queue p50", "beyond queue p99",
    ]  # fmt: skip
    rows = [
        [
            r["transport"],
            str(r["concurrency"]),
            str(r["n"]),
            ms(r["ttfa_p50_s"]),
            ms(r["ttfa_p99_s"]),
            ms(r["engine_first_p50_s"]),
            ms(r["added_p50_s"]),
            ms(r["added_p99_s"]),
            ms(r["queue_p50_s"]),
            ms(r["beyond_queue_p50_s"]),
            ms(r["beyond_queue_p99_s"]),
        ]
        for r in results["first_audio"]
    ]
    out.append(table(header, rows))
    long = results["long_text"]
    out += [
        "",
        f"A {long['chars']}-character text ({long['runs']} runs): first audio streamed "
        f"{ms(long['streamed_ttfa_p50_s'])} ms p50, whole file {ms(long['whole_e2e_p50_s'])} ms p50 "
        f"(ratio {long['ratio_p50']})",
    ]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    return run_and_report(
        args, lambda base_dir: measure(base_dir, quick=args.quick), render, prefix="streaming-"
    )
