"""Template values fitted to WeChat's keyword rules, and the keyword mapping checked at start-up.

No services: the emulator's own rule checker (`emulator.fields.check_value`) is the oracle, so a fitter
that produces something WeChat would refuse with 47003 fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.config import ConfigError, Settings
from events.records import ErrorInfo, TaskRecord, TaskStatus
from wechat_adapter.wechat.subscribe_message import (
    KEYWORD_TYPES,
    TASK_FIELDS,
    TemplateMapping,
    clean,
    fit_character_string,
    fit_date,
    fit_number,
    fit_phrase,
    fit_thing,
    fit_time,
    task_page,
)
from wechat_emulator.fields import check_value

NASTY = [
    None,
    "",
    "   ",
    "\n\t\r",
    "你好",
    "语音合成服务已经准备好了，欢迎大家来试一试这个新功能吧",
    "a" * 10_000,
    "合" * 10_000,
    "line one\nline two\r\nline three",
    "zero\u200bwidth\u200e\u200f\ufeffmarks\u2028sep\u2029para\x00nul\x7fdel\x85nel",
    "😀" * 30,
    "今天天气真好😀😀😀😀😀😀😀😀😀😀😀😀",
    "👍🏽" * 12,
    "🇨🇳" * 12,
    "e\u0301" * 25,
    "lone \ud83d surrogate",
    "paired \ud83d\ude00 halves",
    "ＡＢＣ１２３，全角标点！",
    "\u3000\u3000全角空格\u3000\u3000",
    "<script>alert(1)</script>",
    "\U0002a6a5\U0002a6a5 extension B",  # astral Han
    "\ue000private\U000f0000use",
]

FITTERS = {
    "thing": fit_thing,
    "phrase": fit_phrase,
    "character_string": fit_character_string,
    "time": fit_time,
    "date": fit_date,
    "number": fit_number,
}


@pytest.mark.parametrize("kind", sorted(FITTERS))
@pytest.mark.parametrize("value", NASTY, ids=range(len(NASTY)))
def test_every_fitter_obeys_wechats_rule_whatever_it_gets(kind: str, value: str | None) -> None:
    fitted = FITTERS[kind](value)
    assert check_value(kind, fitted) is None, (kind, value, fitted)
    assert fitted == fitted.strip()
    assert fitted.encode("utf-8")  # no lone surrogates left to break the JSON body


# --- clean -------------------------------------------------------------------------------------------


def test_clean_drops_controls_and_format_characters_and_keeps_line_gaps() -> None:
    assert clean("第一行\n第二行\t第三行") == "第一行 第二行 第三行"
    assert clean("a\u2028b\u2029c") == "a b c"
    assert clean("x\u200by\u200ez\ufeff") == "xyz"  # zero-width space, LRM, BOM are format characters
    assert clean("nul\x00del\x7fbell\x07") == "nuldelbell"
    assert clean("  many    spaces  ") == "many spaces"
    assert clean(None) == ""


def test_clean_pairs_surrogate_halves_and_drops_lone_ones() -> None:
    assert clean("\ud83d\ude00") == "😀"
    assert clean("a\ud83db\udc00c") == "abc"


# --- thing -------------------------------------------------------------------------------------------


def test_thing_keeps_short_text_and_cuts_long_text_with_an_ellipsis() -> None:
    assert fit_thing("你好世界") == "你好世界"
    twenty = "一二三四五六七八九十" * 2
    assert fit_thing(twenty) == twenty
    cut = fit_thing(twenty + "多")
    assert cut == twenty[:19] + "…"
    assert len(cut) == 20
    assert len(fit_thing("a" * 10_000)) == 20


def test_thing_counts_emoji_twice_and_never_splits_them() -> None:
    fitted = fit_thing("😀" * 30)
    assert fitted == "😀" * 9 + "…"  # 19 UTF-16 units: within 20 however WeChat counts
    skin = fit_thing("👍🏽" * 12)
    assert skin == "👍🏽" * 4 + "…"  # 4 × 4 units, then the modifier would not fit: the pair goes
    flags = fit_thing("🇨🇳" * 12)
    assert flags.removesuffix("…") == "🇨🇳" * 4
    accents = fit_thing("e\u0301" * 25)
    assert accents.removesuffix("…") == "e\u0301" * 9


def test_thing_keeps_full_width_text_and_falls_back_when_empty() -> None:
    assert fit_thing("ＡＢＣ，你好！") == "ＡＢＣ，你好！"
    assert fit_thing(None) == "无"
    assert fit_thing("\n\u200b ") == "无"
    assert fit_thing("", fallback="-") == "-"


# --- phrase ------------------------------------------------------------------------------------------


def test_phrase_is_at_most_five_chinese_characters() -> None:
    assert fit_phrase("已完成") == "已完成"
    assert fit_phrase("合成完成!") == "合成完成"
    assert fit_phrase("未通过审核了吗") == "未通过审核"
    assert fit_phrase("OK 好") == "好"
    assert fit_phrase("done") == "无"
    assert fit_phrase(None) == "无"


# --- character_string --------------------------------------------------------------------------------


def test_character_string_is_printable_ascii_up_to_32() -> None:
    assert fit_character_string("t_01jd8x2abc") == "t_01jd8x2abc"
    assert fit_character_string("ＡＢＣ１２３") == "ABC123"  # full width folds to ASCII
    assert fit_character_string("任务 id: 42\n") == "id:42"
    long = fit_character_string("x" * 40)
    assert long == "x" * 29 + "..."
    assert fit_character_string("y" * 32) == "y" * 32
    assert fit_character_string("中文") == "-"
    assert fit_character_string(None) == "-"


# --- time, date, number --------------------------------------------------------------------------------


def test_time_and_date_are_beijing_time() -> None:
    assert fit_time("2024-05-01T16:30:00.123Z") == "2024-05-02 00:30"
    assert fit_time("2024-05-01T16:30:00+00:00") == "2024-05-02 00:30"
    assert fit_time("2024-05-01T08:30:00+08:00") == "2024-05-01 08:30"
    assert fit_time("2024-05-01T16:30:00") == "2024-05-02 00:30"  # naive: UTC, as our records are
    assert fit_time(datetime(2024, 12, 31, 16, 0, tzinfo=UTC)) == "2025-01-01 00:00"
    assert fit_date("2024-12-31T16:00:00Z") == "2025-01-01"
    assert fit_date("2024-12-31T15:59:59Z") == "2024-12-31"


def test_time_falls_back_when_the_value_is_unreadable() -> None:
    fallback = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    assert fit_time("yesterday", fallback=fallback) == "2024-01-02 11:04"
    assert fit_date(None, fallback=fallback) == "2024-01-02"


def test_number_is_digits_with_an_optional_decimal() -> None:
    assert fit_number(4.5) == "4.5"
    assert fit_number(4.04) == "4"
    assert fit_number(12) == "12"
    assert fit_number(0.0) == "0"
    assert fit_number(-3.0) == "0"
    assert fit_number(float("nan")) == "0"
    assert fit_number(float("inf")) == "9" * 32
    assert fit_number(1e40) == "9" * 32
    assert fit_number("约４.５６秒") == "4.56"
    assert fit_number("1" * 40 + ".5") == "9" * 32
    assert fit_number("3." + "1" * 40) == "3"
    assert fit_number(None) == "0"
    assert fit_number(True) == "0"


# --- the mapping -------------------------------------------------------------------------------------


def test_the_default_mapping_is_valid() -> None:
    mapping = TemplateMapping.from_pairs(Settings().wechat_template_fields)
    assert [(k.keyword, k.kind, k.field) for k in mapping.keywords] == [
        ("thing1", "thing", "text"),
        ("phrase2", "phrase", "status"),
        ("character_string3", "character_string", "task_id"),
        ("time4", "time", "updated_at"),
    ]


def test_every_supported_type_has_a_field_and_every_field_a_supported_type() -> None:
    for field, spec in TASK_FIELDS.items():
        assert spec.types and set(spec.types) <= set(KEYWORD_TYPES), field
    assert {t for spec in TASK_FIELDS.values() for t in spec.types} == set(KEYWORD_TYPES)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("color1", "text")], "unknown keyword type 'color'"),
        ([("thing1", "voice")], "unknown task field 'voice'"),
        ([("thing", "text")], "'thing' is not a type followed by its number"),
        ([("Thing1", "text")], "'Thing1' is not a type followed by its number"),
        ([("time4", "text")], "task field 'text' cannot be shown as 'time'"),
        ([("phrase2", "text")], "task field 'text' cannot be shown as 'phrase'"),
        ([("number5", "task_id")], "task field 'task_id' cannot be shown as 'number'"),
        ([("name1", "text")], "no task field can be shown as 'name'"),
        ([("thing1", "text"), ("thing1", "reason")], "'thing1' is mapped twice"),
        ([], "at least one keyword"),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_keyword(pairs: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ConfigError, match="WECHAT_TEMPLATE_FIELDS") as refused:
        TemplateMapping.from_pairs(pairs)
    assert isinstance(refused.value, ValueError)
    assert message in str(refused.value)


def test_a_mapping_from_the_environment_parses_and_validates() -> None:
    settings = Settings.from_env(
        {"WECHAT_TEMPLATE_FIELDS": "thing1=text, thing5=reason,number6=duration,date7=created_at"}
    )
    mapping = TemplateMapping.from_pairs(settings.wechat_template_fields)
    assert [k.kind for k in mapping.keywords] == ["thing", "thing", "number", "date"]


# --- data for a task ----------------------------------------------------------------------------------

EVERYTHING = TemplateMapping.from_pairs(
    [
        ("thing1", "text"),
        ("phrase2", "status"),
        ("character_string3", "task_id"),
        ("time4", "updated_at"),
        ("thing5", "reason"),
        ("number6", "duration"),
        ("thing7", "duration"),
        ("date8", "created_at"),
        ("thing9", "status"),
        ("character_string10", "status"),
        ("character_string11", "duration"),
        ("thing12", "updated_at"),
        ("thing13", "aigc"),
        ("phrase14", "aigc"),
    ]
)


def make_task(status: TaskStatus, **fields) -> TaskRecord:
    defaults = {
        "task_id": "t_01jd8x2abcdefghijklmnopqrs",
        "owner": "oAbCdEfGhIjKlMnOpQrStUvWxYz0",
        "text": "欢迎使用语音合成服务，祝你今天开心，也祝你明天开心。",
        "voice_id": "v_01jd8x2abcdefghijklmnopqrs",
        "mode": "zero_shot",
        "format": "mp3",
        "notify": True,
        "trace_id": "tr_01jd8x2abcdefghijklmnopqrs",
        "created_at": "2024-05-01T16:29:58.000Z",
        "updated_at": "2024-05-01T16:30:03.500Z",
    }
    return TaskRecord(status=status, **(defaults | fields))


def assert_valid(mapping: TemplateMapping, data: dict[str, str]) -> None:
    kinds = {k.keyword: k.kind for k in mapping.keywords}
    assert list(data) == list(kinds)
    for keyword, value in data.items():
        assert check_value(kinds[keyword], value) is None, (keyword, value)


def test_data_for_a_task_that_succeeded() -> None:
    data = EVERYTHING.data(make_task(TaskStatus.SUCCEEDED, duration_s=4.53, audio_key="outputs/x.mp3"))
    assert_valid(EVERYTHING, data)
    assert data == {
        "thing1": "欢迎使用语音合成服务，祝你今天开心，也…",
        "phrase2": "已完成",
        "character_string3": "t_01jd8x2abcdefghijklmnopqrs",
        "time4": "2024-05-02 00:30",
        "thing5": "无",
        "number6": "4.5",
        "thing7": "4.5秒",
        "date8": "2024-05-02",
        "thing9": "AI合成完成",
        "character_string10": "succeeded",
        "character_string11": "4.5s",
        "thing12": "2024-05-02 00:30",
        "thing13": "本音频由AI生成",
        "phrase14": "智能合成",
    }


def test_data_for_a_task_that_failed_shows_its_text_and_its_reason() -> None:
    error = ErrorInfo("voice_deleted", "声音已被删除，无法合成")
    data = EVERYTHING.data(make_task(TaskStatus.FAILED, text="你好", error=error))
    assert_valid(EVERYTHING, data)
    assert (data["thing1"], data["phrase2"], data["thing5"]) == ("你好", "失败", "声音已被删除，无法合成")
    assert (data["number6"], data["thing7"], data["character_string11"]) == ("0", "无", "-")
    assert (data["thing9"], data["character_string10"]) == ("合成失败", "failed")


def test_data_for_a_task_rejected_by_review() -> None:
    error = ErrorInfo("voice_rejected", "声音未通过审核，请换一段录音")
    data = EVERYTHING.data(make_task(TaskStatus.REJECTED, text="第一行\n第二行", error=error))
    assert_valid(EVERYTHING, data)
    assert (data["thing1"], data["phrase2"], data["thing9"]) == ("第一行 第二行", "未通过", "未通过审核")
    assert data["thing5"] == "声音未通过审核，请换一段录音"


def test_data_with_a_broken_timestamp_uses_now() -> None:
    now = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
    data = EVERYTHING.data(make_task(TaskStatus.SUCCEEDED, updated_at="not a time"), now=now)
    assert data["time4"] == "2024-06-01 08:00"


def test_task_page_opens_the_task() -> None:
    assert task_page("t_01jd8x2abc") == "pages/task/task?id=t_01jd8x2abc"
    assert task_page("a&b=c") == "pages/task/task?id=a%26b%3Dc"
