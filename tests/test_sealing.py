"""Sealed fields: a person's words in events open with their owner's key, and with nothing else."""

from __future__ import annotations

import os

from events.envelope import new_event
from events.names import EventType
from events.replay import describe
from events.sealing import ERASED, SEALED_FIELDS, is_sealed, open_field, open_fields, seal, seal_fields

OWNER, OTHER = "o" + "a" * 27, "o" + "b" * 27
KEY = os.urandom(32)


def test_a_sealed_field_opens_with_its_key_owner_and_name_only() -> None:
    sealed = seal(KEY, OWNER, "text", "你好，世界")
    assert is_sealed(sealed) and "你好" not in str(sealed)
    assert open_field(KEY, OWNER, "text", sealed) == "你好，世界"
    assert open_field(None, OWNER, "text", sealed) == ERASED  # the key is gone: erased
    assert open_field(os.urandom(32), OWNER, "text", sealed) == ERASED
    assert open_field(KEY, OTHER, "text", sealed) == ERASED  # copied into another user's event
    assert open_field(KEY, OWNER, "prompt_text", sealed) == ERASED  # or into another field
    assert open_field(KEY, OWNER, "text", {"sealed": "not base64!"}) == ERASED


def test_two_seals_of_one_text_differ() -> None:
    assert seal(KEY, OWNER, "text", "同一句话") != seal(KEY, OWNER, "text", "同一句话")


def test_only_the_words_are_sealed_and_plain_old_events_read_as_they_are() -> None:
    data = {"text": "要合成的话", "prompt_text": "样本原文", "mode": "zero_shot", "speed": 1.0}
    sealed = seal_fields(data, KEY, OWNER)
    assert set(SEALED_FIELDS) == {name for name, value in sealed.items() if is_sealed(value)}
    assert sealed["mode"] == "zero_shot" and sealed["speed"] == 1.0
    assert open_fields(sealed, KEY, OWNER) == data
    assert open_fields(data, None, OWNER) == data  # events from before sealing
    assert open_fields(sealed, None, OWNER) == {**data, "text": ERASED, "prompt_text": ERASED}


def test_replay_lines_never_print_a_sealed_value() -> None:
    def line(data: dict) -> str:
        event = new_event(
            EventType.SYNTHESIS_REQUESTED, openid=OWNER, trace_id="tr", task_id="t_1", data=data
        )
        return describe(event)

    assert "text=[sealed]" in line(seal_fields({"text": "秘密"}, KEY, OWNER))
    assert f"text={ERASED}" in line({"text": ERASED})
    long_text = "很长的一句话" * 20
    assert f"text={long_text[:39]}…" in line({"text": long_text})


def test_an_erasure_line_says_what_went() -> None:
    event = new_event(
        EventType.USER_ERASED, openid=OWNER, trace_id="tr", data={"voices": 2, "tasks": 5, "objects": 9}
    )
    assert "voices=2 tasks=5 objects=9" in describe(event)
