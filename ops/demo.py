"""Do what a mini program does, against a running stack (`make up` in another terminal):

log in, upload a voice sample, wait for WeChat's audio review, submit a sentence with
`notify: true`, follow the task over SSE, download the audio, and show the subscription message
the emulator received. Without --sample, a few seconds of espeak-ng Mandarin stand in for a
recording. Login codes are made up, so this needs the WeChat emulator, not real WeChat.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from pathlib import Path

import aiohttp

from common.vocabulary import AUDIO_FORMATS, DEFAULT_AUDIO_FORMAT, INSTRUCT
from ops.client import ApiClient
from ops.samples import SAMPLE_TEXT, speech_sample

DEFAULT_SENTENCE = "你好，这是用我自己的声音合成的一句话。"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default: %(default)s)")
    parser.add_argument("--emulator", default="http://127.0.0.1:8090", help="WeChat emulator, for its log")
    parser.add_argument("--sample", type=Path, help="a recording to upload (WAV, MP3, M4A, Opus)")
    parser.add_argument("--text", default=DEFAULT_SENTENCE, help="the sentence to synthesise")
    parser.add_argument("--format", default=DEFAULT_AUDIO_FORMAT, choices=AUDIO_FORMATS)
    parser.add_argument("--preset", help="a style preset id (GET /v1/presets), e.g. sichuan or sad")
    parser.add_argument("--out", type=Path, default=Path("var/demo"), help="where to save the audio")


def step(message: str) -> None:
    print(f"• {message}", flush=True)


async def demo(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as http:
        client = ApiClient(http, args.url)
        login = await client.login(f"demo-{uuid.uuid4().hex[:12]}")
        if login.status != 200:
            print(f"login failed: {login.status} {login.body}")
            return 1
        step(f"logged in as {client.openid}")

        audio = args.sample.read_bytes() if args.sample else speech_sample("aac")
        upload = await client.upload_voice(
            audio, filename=args.sample.name if args.sample else "sample.m4a", prompt_text=SAMPLE_TEXT
        )
        if upload.status != 201:
            print(f"upload refused: {upload.status} {upload.body}")
            return 1
        voice_id = upload.body["voice_id"]
        step(f"voice {voice_id} uploaded ({upload.body['duration_s']} s), waiting for WeChat's review")
        voice = await client.wait_voice(voice_id)
        step(f"voice is {voice['status']}")
        if voice["status"] != "ready":
            return 1

        options: dict[str, object] = {"format": args.format, "notify": True}
        if args.preset:
            options |= {"mode": INSTRUCT, "instruct": args.preset}
        submitted = await client.synthesize(args.text, voice_id, **options)
        if submitted.status not in (200, 202):
            print(f"synthesis refused: {submitted.status} {submitted.body}")
            return 1
        task_id = submitted.body["task_id"]
        step(f"task {task_id} {submitted.body['status']}; following its events")
        for event in await client.follow_events(task_id):
            step(f"  status: {event['status']}")
        task = (await client.request("GET", f"/v1/syntheses/{task_id}")).body
        if task["status"] != "succeeded":
            print(f"task ended {task['status']}: {task.get('error')}")
            return 1

        reply = await client.request("GET", task["audio_url"])
        out = args.out.with_suffix(f".{args.format}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(reply.body)
        step(f"audio saved to {out} ({len(reply.body)} bytes, {task['duration_s']} s): play it")
        step(f"audio_url for InnerAudioContext: {task['audio_url']}")

        await _show_notice(http, args.emulator, task_id)
        step(f"timeline: python -m ops replay task {task_id}")
    return 0


async def _show_notice(http: aiohttp.ClientSession, emulator: str, task_id: str) -> None:
    """The subscription message as the emulator received it (retry briefly: the notifier is async)."""
    for _ in range(50):
        try:
            async with http.get(f"{emulator}/_emulator/messages") as response:
                messages = await response.json()
        except aiohttp.ClientError:
            step("no emulator to ask for the subscription message")
            return
        mine = [m for m in messages if task_id in str(m)]
        if mine:
            step(f"subscription message sent: {mine[-1]}")
            return
        await asyncio.sleep(0.1)
    step("no subscription message yet")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(demo(args))
