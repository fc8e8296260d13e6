"""The whole path on real parts: login → voice sample → synthesis → S3 → subscription notice."""

from __future__ import annotations

import dataclasses

import pytest
from stack import SAMPLE_TEXT, Stack, serving, speech_sample

from common.audio import decode_audio, rms_dbfs
from events.replay import task_timeline
from ops.client import ApiClient, eventually
from ops.services.ports import free_port
from synth_worker import labels
from wechat_adapter.app import create_app

SENTENCE = "欢迎使用语音合成服务，祝你今天开心。"


def assert_speech_of(audio: bytes, text: str) -> None:
    """Decodes, is not silent, and lasts about as long as the text takes to say, followed by the
    spoken AIGC label (AIGC_EXPLICIT_LABEL's default, on the stack's worker) after its pause."""
    pcm = decode_audio(audio)
    assert rms_dbfs(pcm) > -35
    label_s = labels.GAP_S + labels.voice_label().duration_s
    seconds_per_char = (pcm.duration_s - label_s) / len(text)
    assert 0.08 < seconds_per_char < 0.6, pcm.duration_s


@pytest.mark.parametrize(
    ("sample_format", "as_base64"), [("wav", False), ("aac", True)], ids=["wav-multipart", "m4a-base64"]
)
async def test_whole_flow(stack: Stack, sample_format: str, as_base64: bool) -> None:
    user = await stack.user()
    upload = await user.upload_voice(
        speech_sample(sample_format),
        filename=f"rec.{sample_format}",
        prompt_text=SAMPLE_TEXT,
        as_base64=as_base64,
    )
    assert upload.status == 201, upload.body
    assert upload.body["status"] == "pending_review"
    assert 3 <= upload.body["duration_s"] <= 30
    voice = await user.wait_voice(upload.body["voice_id"])
    assert voice["status"] == "ready"

    submitted = await user.synthesize(SENTENCE, voice["voice_id"], format="mp3", notify=True)
    assert submitted.status == 202, submitted.body
    task_id = submitted.body["task_id"]
    assert submitted.body["status"] == "queued"
    statuses = [e["status"] for e in await user.follow_events(task_id)]
    assert statuses[-1] == "succeeded", statuses
    assert len(statuses) == len(set(statuses))  # one event per status change

    task = (await user.request("GET", f"/v1/syntheses/{task_id}")).body
    assert task["audio_url"].startswith(stack.url)
    assert task["duration_s"] > 0
    # The audio_url works without a header, as InnerAudioContext fetches it.
    anonymous = stack.client()
    audio = await anonymous.request("GET", task["audio_url"])
    assert audio.status == 200
    assert audio.headers["Content-Type"] == "audio/mpeg"
    assert_speech_of(audio.body, SENTENCE)
    ranged = await user.request("GET", f"/v1/syntheses/{task_id}/audio", headers={"Range": "bytes=100-199"})
    assert ranged.status == 206
    assert ranged.body == audio.body[100:200]
    assert ranged.headers["Content-Range"] == f"bytes 100-199/{len(audio.body)}"
    past_end = f"bytes={len(audio.body) + 10}-"
    beyond = await user.request("GET", f"/v1/syntheses/{task_id}/audio", headers={"Range": past_end})
    assert beyond.status == 416
    assert beyond.body["error"]["code"] == "range_not_satisfiable"  # an error like every other
    assert beyond.headers["Content-Range"] == f"bytes */{len(audio.body)}"

    # The notifier's subscription message reaches the user's WeChat.
    [message] = await eventually(lambda: [m for m in stack.emulator.sent_messages if task_id in str(m)])
    assert message["touser"] == user.openid
    assert message["page"] == f"pages/task/task?id={task_id}"

    # The stream tells the task's story, in order.
    async def timeline() -> list[str] | None:
        types = [e.type for e in await task_timeline(stack.bus, task_id)]
        return types if "tts.notify.sent" in types else None

    types = await eventually(timeline)
    assert types == [
        "tts.synthesis.requested",
        "tts.synthesis.started",
        "tts.synthesis.completed",
        "tts.notify.sent",
    ]


@pytest.mark.parametrize("audio_format", ["mp3", "aac", "wav"])
async def test_every_output_format_plays(stack: Stack, audio_format: str) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    submitted = await user.synthesize("你好世界", voice["voice_id"], format=audio_format)
    task = await user.wait_task(submitted.body["task_id"])
    assert task["status"] == "succeeded", task
    audio = await user.request("GET", task["audio_url"])
    assert (
        audio.headers["Content-Type"]
        == {"mp3": "audio/mpeg", "aac": "audio/mp4", "wav": "audio/wav"}[audio_format]
    )
    assert_speech_of(audio.body, "你好世界")


async def test_task_for_voice_in_review_waits_then_runs(stack: Stack) -> None:
    user = await stack.user()
    stack.emulator.set_media_delay(1.0)
    try:
        upload = await user.upload_voice(speech_sample())
    finally:
        stack.emulator.set_media_delay(0.0)
    submitted = await user.synthesize("等一下再说", upload.body["voice_id"])
    assert submitted.status == 202
    assert submitted.body["status"] == "awaiting_review"
    task = await user.wait_task(submitted.body["task_id"])
    assert task["status"] == "succeeded"


async def test_risky_voice_is_rejected(stack: Stack) -> None:
    user = await stack.user()
    stack.emulator.set_media_verdict("risky", "20002")
    try:
        upload = await user.upload_voice(speech_sample())
        voice = await user.wait_voice(upload.body["voice_id"])
    finally:
        stack.emulator.set_media_verdict("pass", "100")
    assert voice["status"] == "rejected"
    refused = await user.synthesize("不能用这个声音", voice["voice_id"])
    assert (refused.status, refused.error_code) == (422, "voice_rejected")


async def test_presets_are_published(stack: Stack) -> None:
    user = await stack.user()
    presets = (await user.request("GET", "/v1/presets")).body["presets"]
    assert {"id": "sichuan", "name": "四川话", "kind": "dialect"} in presets
    assert {p["kind"] for p in presets} == {"dialect", "emotion", "speed", "volume"}
    assert len([p for p in presets if p["kind"] == "dialect"]) == 17


async def test_instruct_with_a_preset(stack: Stack) -> None:
    user = await stack.user()
    voice = await stack.ready_voice(user)
    submitted = await user.synthesize(
        "雷猴，食咗饭未呀", voice["voice_id"], mode="instruct", instruct="guangdong"
    )
    assert submitted.status == 202, submitted.body
    task = await user.wait_task(submitted.body["task_id"])
    assert task["status"] == "succeeded"
    listed = (await user.request("GET", "/v1/syntheses?limit=5")).body["tasks"]
    assert listed[0]["task_id"] == task["task_id"]


async def test_rate_limit_is_shared_by_gateway_instances(stack: Stack) -> None:
    """RATE_LIMIT_PER_MINUTE counts per user in NATS KV: two gateways share one budget."""
    limited = dataclasses.replace(stack.settings, rate_limit_per_minute=2)
    user = await stack.user()
    voice = await stack.ready_voice(user)
    port = free_port()
    async with serving(create_app(limited), port):
        other_instance = ApiClient(stack.http, f"http://127.0.0.1:{port}", token=user.token)
        # Two requests through the stack's gateway use up the budget the other instance enforces.
        replies = [
            await client.synthesize("一句话", voice["voice_id"]) for client in (user, user, other_instance)
        ]
    statuses = [r.status for r in replies]
    if statuses[:2] != [202, 202]:  # the minute rolled over between requests: retry is not worth it here
        pytest.skip(f"window boundary crossed: {statuses}")
    assert statuses[2] == 429
    assert replies[2].error_code == "rate_limited"
    assert 1 <= int(replies[2].headers["Retry-After"]) <= 60
