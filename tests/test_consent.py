"""Consent at voice enrolment (《深度合成管理规定》第十四条): the speaker's separate consent.

`POST /v1/voices` requires `consent` ("self" or "authorized"); without it the upload is refused
before anything costly (no decode, no WeChat call, nothing stored or published). The voice and its
`tts.voice.uploaded` event carry the consent; voices stored before carry the legacy marker.
"""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest
from stack import Stack, another_gateway, speech_sample
from test_rejections import assert_error, nothing_changed, upload

from events.names import EventType
from events.records import VoiceRecord, VoiceStatus
from events.replay import read_events
from ops.client import ApiClient
from wechat_adapter.fields import CONSENT_UNRECORDED, CONSENTS

WECHAT_CHECKS = ("msg_sec_check", "media_check_async")


def wechat_checks(stack: Stack, user: ApiClient) -> int:
    """How often WeChat's content checks were asked about this user's things."""
    return sum(
        call.api in WECHAT_CHECKS and isinstance(call.body, dict) and call.body.get("openid") == user.openid
        for call in stack.emulator.calls
    )


@pytest.mark.parametrize("as_base64", [False, True], ids=["multipart", "json"])
@pytest.mark.parametrize(
    ("consent", "code"),
    [
        (None, "consent_required"),
        ("", "consent_required"),
        ("yes", "invalid_request"),
        ("SELF", "invalid_request"),
    ],
    ids=["missing", "empty", "unknown", "wrong_case"],
)
async def test_an_upload_without_a_valid_consent_is_refused_and_leaves_no_trace(
    stack: Stack, as_base64: bool, consent: str | None, code: str
) -> None:
    user = await stack.user()
    async with nothing_changed(stack, user):
        reply = await upload(user, speech_sample("wav"), as_base64=as_base64, consent=consent)
        assert_error(reply, 400, code)
    assert wechat_checks(stack, user) == 0, "refused before WeChat was asked anything"


async def test_consent_of_the_wrong_json_type_is_invalid(stack: Stack) -> None:
    user = await stack.user()
    async with nothing_changed(stack, user):
        reply = await user.request(
            "POST",
            "/v1/voices",
            json={"audio_base64": "AAAA", "prompt_text": "你好", "consent": True},
        )
        assert_error(reply, 400, "invalid_request")


async def test_a_missing_consent_is_refused_before_the_upload_rate_counts_it(stack: Stack) -> None:
    """The consent check comes before the voice-count and upload-rate checks: refusals cost nothing."""
    async with another_gateway(stack, uploads_per_hour=1) as (url, _):
        user = ApiClient(stack.http, url)
        assert (await user.login(f"c{uuid.uuid4().hex[:12]}:{uuid.uuid4().hex[:8]}")).status == 200
        for _ in range(3):
            refused = await user.upload_voice(speech_sample("wav"), consent=None)
            assert_error(refused, 400, "consent_required")
        accepted = await user.upload_voice(speech_sample("wav"))
        assert accepted.status == 201, accepted.body
        await user.wait_voice(accepted.body["voice_id"])  # reviewed before the gateway goes away


@pytest.mark.parametrize("as_base64", [False, True], ids=["multipart", "json"])
@pytest.mark.parametrize("consent", CONSENTS)
async def test_the_voice_and_its_event_carry_the_consent(stack: Stack, consent: str, as_base64: bool) -> None:
    user = await stack.user()
    since_s = time.time() - 5
    created = await user.upload_voice(speech_sample("wav"), consent=consent, as_base64=as_base64)
    assert created.status == 201, created.body
    assert created.body["consent"] == consent
    voice_id = created.body["voice_id"]

    fetched = await user.request("GET", f"/v1/voices/{voice_id}")
    assert fetched.status == 200 and fetched.body["consent"] == consent
    listed = await user.request("GET", "/v1/voices")
    assert [v["consent"] for v in listed.body["voices"] if v["voice_id"] == voice_id] in ([consent], [])

    [event] = [
        e
        async for e in read_events(
            stack.bus,
            since_s=since_s,
            accept=lambda e: e.voice_id == voice_id and e.type == EventType.VOICE_UPLOADED,
        )
    ]
    assert event.data["consent"] == consent
    consent_at = event.data["consent_at"]
    assert isinstance(consent_at, str) and consent_at.startswith(created.body["created_at"][:10])
    assert consent_at == created.body["created_at"]


def test_a_voice_stored_before_consent_was_asked_decodes_with_the_legacy_marker() -> None:
    stored_before = {
        "voice_id": "v_old",
        "owner": "o_x.abc",
        "name": "旧的声音",
        "status": "ready",
        "duration_s": 5.0,
        "prompt_text": "你好",
        "created_at": "2025-01-01T00:00:00Z",
        "sample_key": "samples/o_x.abc/v_old.wav",
        "audio_sha256": "0" * 64,
        "media_trace_id": "t",
        "review_label": None,
    }
    voice = msgspec.json.decode(msgspec.json.encode(stored_before), type=VoiceRecord)
    assert voice.status is VoiceStatus.READY
    assert (voice.consent, voice.consent_at) == (CONSENT_UNRECORDED, "")
    assert CONSENT_UNRECORDED not in CONSENTS  # a legacy voice's marker is never accepted on upload
