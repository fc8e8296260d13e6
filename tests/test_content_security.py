"""Content security: the local word list, msgSecCheck policies, and audio reviews that never come.

The word list and msgSecCheck run on the session's stack; a policy other than the default runs on a
second gateway instance over the same NATS, S3 and emulator (as a second deployment would). A refused
text must leave no trace: no msgSecCheck call when the local list refused it, nothing on the stream.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from stack import Stack, another_gateway, speech_sample

from common.config import ConfigError, Settings
from events import names
from events.names import EventType
from events.records import VoiceStatus
from events.replay import read_events, task_timeline
from ops.client import ApiClient, Reply, eventually
from ops.services.ports import free_port
from wechat_adapter.app import create_app
from wechat_adapter.review_timeout import decision_for, sweep_interval_s
from wechat_adapter.sensitive_words import (
    SHIPPED_WORDS_FILE,
    SensitiveWords,
    SensitiveWordsError,
    parse_word_list,
)

LISTED_WORD = "违禁测试词"  # in the shipped placeholder list
LATE_VERDICT_S = 3.0  # how late WeChat's audio verdict comes in the timeout tests


# --- the word list on its own ---------------------------------------------------------------------------


def test_word_file_format(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# a comment\n\n  赌博网站  \nBadWord\n# 不是词\nbadword\n", encoding="utf-8")
    assert parse_word_list(path.read_text(encoding="utf-8")) == ["赌博网站", "BadWord", "badword"]
    words = SensitiveWords.from_file(path)
    assert words.find("欢迎光临赌博网站") == "赌博网站"
    assert words.find("a BADWORD here") in {"BadWord", "badword"}
    assert words.find("不是词") is None  # comments are not words


@pytest.mark.parametrize(
    "text",
    [
        "请读：违禁测试词。",
        "违 禁 测 试 词",
        "违-禁-测-试-词",
        "违\u200b禁\u200d测\u2060试\ufeff词",  # zero-width characters
        "违😀禁测试词",  # an emoji in between
        "违\n禁\t测试词",
        "ＦＯＲＢＩＤＤＥＮ ＴＥＳＴ ＷＯＲＤ",  # full-width, upper case, spaced
        "Forbidden.Test.Word",
    ],
)
def test_evasions_still_match(text: str) -> None:
    assert SensitiveWords.from_file(SHIPPED_WORDS_FILE).find(text) is not None


@pytest.mark.parametrize("text", ["违禁测试", "违禁的测试词", "欢迎使用语音合成服务", "forbidden test", ""])
def test_innocent_text_does_not_match(text: str) -> None:
    assert SensitiveWords.from_file(SHIPPED_WORDS_FILE).find(text) is None


def test_words_that_are_mostly_punctuation_match_only_as_written() -> None:
    words = SensitiveWords(["c++", "   ", ""])
    assert len(words) == 1
    assert words.find("I write C++") == "c++"
    assert words.find("a c b") is None  # "c++" squeezed to "c" would match nearly everything


def test_an_empty_list_matches_nothing() -> None:
    assert SensitiveWords([]).find("违禁测试词") is None


def test_unreadable_word_file_stops_the_gateway_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    with pytest.raises(SensitiveWordsError, match=r"missing\.txt"):
        create_app(_settings_with_words(missing))
    not_utf8 = tmp_path / "gbk.txt"
    not_utf8.write_bytes("违禁测试词".encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk\.txt"):
        create_app(_settings_with_words(not_utf8))


def _settings_with_words(path: Path) -> Settings:
    return Settings(
        session_secret="x" * 32, wechat_api_base="http://127.0.0.1:8090", sensitive_words_file=str(path)
    )


def test_sweep_interval_and_policies() -> None:
    assert sweep_interval_s(3600) == 60
    assert sweep_interval_s(1) == 0.25
    assert decision_for("reject") == VoiceStatus.REJECTED
    assert decision_for("accept") == VoiceStatus.READY


# --- helpers for the stack tests ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Speaker:
    user: ApiClient
    voice_id: str


@pytest.fixture(scope="module")
async def speaker(stack: Stack) -> Speaker:
    """One user with a ready voice, shared by the tests that only submit text."""
    user = await stack.user()
    return Speaker(user, (await stack.ready_voice(user))["voice_id"])


def text_checks(stack: Stack, openid: str | None) -> list[dict[str, Any]]:
    """The msgSecCheck request bodies the emulated WeChat received for this user."""
    return [
        call.body
        for call in stack.emulator.calls
        if call.api == "msg_sec_check" and isinstance(call.body, dict) and call.body.get("openid") == openid
    ]


async def without_trace(
    stack: Stack, user: ApiClient, send: Callable[[], Awaitable[Reply]], *, checked: bool
) -> Reply:
    """Send a request that must be refused: the stream must not move, and msgSecCheck is called once
    if `checked`, never when the local list refused the text first."""
    before_seq, before_checks = await stack.settled_seq(), len(text_checks(stack, user.openid))
    reply = await send()
    assert await stack.stream_last_seq() == before_seq
    assert len(text_checks(stack, user.openid)) == before_checks + (1 if checked else 0)
    return reply


def same_user_on(url: str, stack: Stack, user: ApiClient) -> ApiClient:
    client = ApiClient(stack.http, url, token=user.token)
    client.openid = user.openid
    return client


def assert_refused(reply: Reply, status: int, code: str) -> None:
    assert (reply.status, reply.error_code) == (status, code), (reply.status, reply.body)


def unique_word() -> str:
    return f"复核{uuid.uuid4().hex[:8]}"


# --- the local word list on the stack ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "请帮我读违禁测试词",
        "违 禁 测 试 词",
        "违\u200b禁测\u200b试词",
        "ＦＯＲＢＩＤＤＥＮ ＴＥＳＴ ＷＯＲＤ",
    ],
    ids=["plain", "spaced", "zero-width", "fullwidth"],
)
async def test_listed_word_in_synthesis_text_is_refused_before_wechat(
    stack: Stack, speaker: Speaker, text: str
) -> None:
    user = speaker.user
    reply = await without_trace(stack, user, lambda: user.synthesize(text, speaker.voice_id), checked=False)
    assert_refused(reply, 422, "text_rejected")


@pytest.mark.parametrize("field", ["name", "prompt_text"])
async def test_listed_word_in_voice_name_or_prompt_is_refused(stack: Stack, field: str) -> None:
    user = await stack.user()
    upload = {"name": "我的声音", "prompt_text": "你好，这是我的声音。"} | {field: f"赌-博-网-站{field}"}
    reply = await without_trace(
        stack, user, lambda: user.upload_voice(speech_sample(), **upload), checked=False
    )
    assert_refused(reply, 422, "text_rejected")
    assert text_checks(stack, user.openid) == []
    assert (await user.request("GET", "/v1/voices")).body == {"voices": []}


# --- msgSecCheck ------------------------------------------------------------------------------------------


async def test_texts_are_checked_with_the_users_openid_and_a_fitting_scene(
    stack: Stack, speaker: Speaker
) -> None:
    user = speaker.user
    submitted = await user.synthesize("今天天气很好", speaker.voice_id)
    assert submitted.status == 202, submitted.body
    synthesis_check = text_checks(stack, user.openid)[-1]
    assert synthesis_check | {"content": ""} == {
        "version": 2,
        "openid": user.openid,
        "scene": 2,
        "content": "",
    }
    assert synthesis_check["content"] == "今天天气很好"
    uploader = await stack.user()
    await stack.ready_voice(uploader, name="小明", prompt_text="这是小明的声音。")
    [voice_check] = text_checks(stack, uploader.openid)
    assert (voice_check["scene"], voice_check["content"]) == (1, "小明\n这是小明的声音。")


@pytest.mark.parametrize("suggest", ["review", "risky"])
async def test_review_and_risky_verdicts_are_refused_by_default(
    stack: Stack, speaker: Speaker, suggest: str
) -> None:
    word = unique_word()
    stack.emulator.set_text_verdict(word, suggest, 20001)
    user = speaker.user
    reply = await without_trace(
        stack, user, lambda: user.synthesize(f"请读{word}", speaker.voice_id), checked=True
    )
    assert_refused(reply, 422, "text_rejected")


async def test_review_verdict_passes_when_the_policy_allows_it(stack: Stack, speaker: Speaker) -> None:
    review_word, risky_word = unique_word(), unique_word()
    stack.emulator.set_text_verdict(review_word, "review", 20001)
    stack.emulator.set_text_verdict(risky_word, "risky", 20002)
    async with another_gateway(stack, text_review_policy="allow") as (url, _):
        user = same_user_on(url, stack, speaker.user)
        allowed = await user.synthesize(f"请读{review_word}", speaker.voice_id)
        assert allowed.status == 202, allowed.body
        refused = await user.synthesize(f"请读{risky_word}", speaker.voice_id)
        assert_refused(refused, 422, "text_rejected")


async def test_wechat_error_fails_closed_by_default(stack: Stack, speaker: Speaker) -> None:
    stack.emulator.script_error("msg_sec_check", 45009, "reach max api daily quota limit")
    user = speaker.user
    reply = await without_trace(stack, user, lambda: user.synthesize("你好", speaker.voice_id), checked=True)
    assert_refused(reply, 502, "wechat_unavailable")


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
async def test_unreachable_wechat(stack: Stack, speaker: Speaker, fail_open: bool) -> None:
    down = {"wechat_api_base": f"http://127.0.0.1:{free_port()}", "security_fail_open": fail_open}
    async with another_gateway(stack, **down) as (url, gateway):
        user = same_user_on(url, stack, speaker.user)
        reply = await user.synthesize("你好", speaker.voice_id)
        if not fail_open:
            assert_refused(reply, 502, "wechat_unavailable")
            return
        assert reply.status == 202, reply.body
        outcome = {"api": "msg_sec_check", "outcome": "fail_open"}
        assert gateway.metrics.registry.get_sample_value("voicerelay_wechat_calls_total", outcome) == 1
        # Failing open never skips our own list.
        assert_refused(await user.synthesize(LISTED_WORD, speaker.voice_id), 422, "text_rejected")


# --- audio reviews that never come ------------------------------------------------------------------------


async def review_consumer_idle(stack: Stack) -> None:
    async def idle() -> bool:
        info = await stack.bus.js.consumer_info(names.STREAM, names.REVIEW_CONSUMER)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(idle)


@pytest.mark.parametrize(
    ("policy", "voice_status", "task_status", "task_event"),
    [
        ("reject", "rejected", "rejected", EventType.SYNTHESIS_FAILED),
        ("accept", "ready", "succeeded", EventType.SYNTHESIS_REQUESTED),
    ],
)
async def test_a_verdict_that_never_comes_is_decided_by_the_timeout_policy(
    stack: Stack, policy: str, voice_status: str, task_status: str, task_event: EventType
) -> None:
    """Two instances sweep with a 1 s timeout (plus the stack's own, with the default hour): the voice
    is decided once, its waiting task moves once, and WeChat's late verdict changes nothing."""
    user = await stack.user()
    started_s = time.time()
    timing_out = {"media_review_timeout_s": 1, "media_review_timeout_policy": policy}
    async with another_gateway(stack, **timing_out) as (_, gateway), another_gateway(stack, **timing_out):
        stack.emulator.set_media_delay(LATE_VERDICT_S)
        try:
            upload = await user.upload_voice(speech_sample())
        finally:
            stack.emulator.set_media_delay(0.0)
        voice_id = upload.body["voice_id"]
        submitted = await user.synthesize("审核结果迟迟没有来", voice_id)
        assert submitted.body["status"] == "awaiting_review", submitted.body

        voice = await user.wait_voice(voice_id, timeout_s=LATE_VERDICT_S)
        assert voice["status"] == voice_status
        task = await user.wait_task(submitted.body["task_id"])
        assert task["status"] == task_status, task
        if task_status == "rejected":
            assert task["error"]["code"] == "voice_rejected"

        await stack.emulator.settle()  # WeChat's own verdict ("pass") arrives after all...
        await review_consumer_idle(stack)
        record = await gateway.state.voices.get(user.openid, voice_id)
    assert record is not None
    assert (record.status, record.review_label) == (voice_status, "timeout")  # ...and changes nothing
    trace = record.media_trace_id
    reviewed = [
        e.id
        async for e in read_events(
            stack.bus,
            since_s=started_s - 1,
            subjects=str(EventType.VOICE_REVIEWED),
            accept=lambda e: e.data.get("media_trace_id") == trace,
        )
    ]
    assert sorted(reviewed) == [f"review.{trace}", f"review.{trace}.timeout"]
    timeline = [e.type for e in await task_timeline(stack.bus, task["task_id"])]
    assert timeline.count(task_event) == 1, timeline
