"""Filling a subscription-message template: which task field each keyword shows, fitted to its type.

WeChat refuses a whole send (47003) when one value breaks its keyword type's rule, and the rules are
per type (WeChat's subscribeMessage.send docs): `thing` ≤ 20 characters, `phrase` ≤ 5 Chinese characters,
`character_string` ≤ 32 ASCII, `time`/`date` a point in time, `number` digits, and no control
characters anywhere. Every fitter here returns a value that obeys its rule whatever it is given.

The template itself is configuration (`WECHAT_TEMPLATE_FIELDS=thing1=text,phrase2=status,…`): a
keyword's type is its name less the trailing digits. `TemplateMapping.from_pairs` checks the whole
mapping once, at start-up, so a typo stops the gateway instead of failing every notification.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

from common.config import ConfigError
from events.records import TaskRecord, TaskStatus

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")  # China has no daylight saving time

THING_MAX_CHARS = 20
PHRASE_MAX_CHARS = 5
CHARACTER_STRING_MAX_CHARS = 32
NUMBER_MAX_DIGITS = 32
ELLIPSIS = "…"

_NONE_TEXT = "无"  # what a Chinese card shows for "nothing here"
_NONE_ASCII = "-"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")  # the CJK blocks WeChat counts as Chinese characters
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]")  # no space: WeChat's rule says digits, letters or symbols
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Line breaks and tabs become a space before controls are dropped, so "第一行\n第二行" keeps its gap.
_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]")
_SPACES = re.compile(r"\s+")
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEYWORD = re.compile(r"([a-z]+(?:_[a-z]+)*)(\d+)")


# --- fitters: any input in, a value that obeys the keyword type's rule out ----------------------------


def clean(value: object) -> str:
    """Text without control, format, surrogate or private-use characters, whitespace collapsed.

    Surrogate halves that pair up are joined into their character; lone ones are dropped.
    """
    if value is None:
        return ""
    text = str(value).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")
    text = _BREAKS.sub(" ", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    return _SPACES.sub(" ", text).strip()


def _units(ch: str) -> int:
    """UTF-16 code units: an emoji counts twice, so the limit holds however WeChat counts."""
    return 2 if ord(ch) > 0xFFFF else 1


def _extends_previous(ch: str) -> bool:
    """True for characters that belong to the character before them (accents, emoji modifiers)."""
    return (
        unicodedata.category(ch) in {"Mn", "Mc", "Me"}
        or "\ufe00" <= ch <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= ch <= "\U000e007f"  # emoji tag sequences
    )


def _is_regional_indicator(ch: str) -> bool:
    return "\U0001f1e6" <= ch <= "\U0001f1ff"


def _cut(text: str, max_units: int) -> str:
    """The longest prefix within `max_units` that does not split a character from its marks or a flag."""
    kept, used = 0, 0
    for ch in text:
        if used + _units(ch) > max_units:
            break
        used += _units(ch)
        kept += 1
    if kept == len(text):
        return text
    while 0 < kept < len(text) and _extends_previous(text[kept]):
        kept -= 1  # drop the base together with the marks that would have been cut off
    run = 0
    while run < kept and _is_regional_indicator(text[kept - 1 - run]):
        run += 1
    if run % 2 and kept < len(text) and _is_regional_indicator(text[kept]):
        kept -= 1  # half a flag
    return text[:kept]


def fit_thing(value: object, *, fallback: str = _NONE_TEXT) -> str:
    """`thing`: at most 20 characters; longer text ends in "…" within the limit."""
    text = clean(value)
    if not text:
        return fallback
    if sum(map(_units, text)) <= THING_MAX_CHARS:
        return text
    return _cut(text, THING_MAX_CHARS - len(ELLIPSIS)).rstrip() + ELLIPSIS


def fit_phrase(value: object, *, fallback: str = _NONE_TEXT) -> str:
    """`phrase`: Chinese characters only, at most 5 (anything else is dropped)."""
    return "".join(_HAN.findall(clean(value)))[:PHRASE_MAX_CHARS] or fallback


def fit_character_string(value: object, *, fallback: str = _NONE_ASCII) -> str:
    """`character_string`: printable ASCII without spaces, at most 32; full-width forms become ASCII."""
    text = "".join(_PRINTABLE_ASCII.findall(unicodedata.normalize("NFKC", clean(value))))
    if len(text) <= CHARACTER_STRING_MAX_CHARS:
        return text or fallback
    return text[: CHARACTER_STRING_MAX_CHARS - 3] + "..."


def _moment(value: object, fallback: datetime | None) -> datetime:
    """An ISO-8601 string or a datetime (naive means UTC); unreadable input gives `fallback` or now."""
    moment: datetime | None = value if isinstance(value, datetime) else None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
    if moment is None:
        moment = fallback or datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def fit_time(value: object, *, fallback: datetime | None = None) -> str:
    """`time`: `YYYY-MM-DD HH:MM` in Beijing time, as the card shows it to a user in China."""
    return _moment(value, fallback).astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


def fit_date(value: object, *, fallback: datetime | None = None) -> str:
    """`date`: `YYYY-MM-DD` in Beijing time."""
    return _moment(value, fallback).astimezone(CHINA_TZ).strftime("%Y-%m-%d")


def fit_number(value: object) -> str:
    """`number`: digits with an optional decimal part (WeChat allows one), at most 32 characters.

    A float is shown to one decimal ("4.5", "4"); text gives its first number; nothing usable or a
    negative value gives "0"; a number too long for the type saturates at 32 nines.
    """
    if isinstance(value, bool) or value is None:
        return "0"
    if isinstance(value, int | float):
        if not value > 0:  # negative, zero or NaN
            return "0"
        text = f"{value:.1f}".removesuffix(".0") if value < 1e33 else "9" * (NUMBER_MAX_DIGITS + 1)
    else:
        found = _NUMBER.search(unicodedata.normalize("NFKC", clean(value)))
        text = found.group() if found else "0"
    if len(text) > NUMBER_MAX_DIGITS:
        text = text.partition(".")[0]
    return text if len(text) <= NUMBER_MAX_DIGITS else "9" * NUMBER_MAX_DIGITS


# --- task fields: what a keyword may show, and as which types ------------------------------------------

_STATUS_PHRASES = {
    TaskStatus.SUCCEEDED: "已完成",
    TaskStatus.FAILED: "失败",
    TaskStatus.REJECTED: "未通过",
}
# China's AIGC labelling rules: where a keyword can say so, the card says the audio is AI-made. A
# `phrase` holds Chinese characters only, so "AI" fits `thing` values, and the `aigc` field below.
_STATUS_THINGS = {
    TaskStatus.SUCCEEDED: "AI合成完成",
    TaskStatus.FAILED: "合成失败",
    TaskStatus.REJECTED: "未通过审核",
}
_STATUS_PENDING = "处理中"
_AIGC_VALUES = {"thing": "本音频由AI生成", "phrase": "智能合成", "character_string": "AIGC"}


def _seconds(duration_s: float | None) -> str | None:
    return None if duration_s is None else fit_number(duration_s)


def _status(task: TaskRecord, kind: str, now: datetime) -> str:
    if kind == "phrase":
        return _STATUS_PHRASES.get(task.status, _STATUS_PENDING)
    if kind == "thing":
        return _STATUS_THINGS.get(task.status, _STATUS_PENDING)
    return fit_character_string(task.status.value)


def _aigc(task: TaskRecord, kind: str, now: datetime) -> str:
    return _AIGC_VALUES[kind]


def _timestamp(attribute: str) -> Callable[[TaskRecord, str, datetime], str]:
    def value(task: TaskRecord, kind: str, now: datetime) -> str:
        moment = getattr(task, attribute)
        if kind == "date":
            return fit_date(moment, fallback=now)
        return fit_time(moment, fallback=now)  # as `thing` it reads the same: 16 characters

    return value


def _duration(task: TaskRecord, kind: str, now: datetime) -> str:
    seconds = _seconds(task.duration_s)
    if kind == "number":
        return seconds or "0"
    if kind == "thing":
        return fit_thing(None if seconds is None else f"{seconds}秒")
    return fit_character_string(None if seconds is None else f"{seconds}s")


def _plain(read: Callable[[TaskRecord], str | None]) -> Callable[[TaskRecord, str, datetime], str]:
    def value(task: TaskRecord, kind: str, now: datetime) -> str:
        return _FITTERS[kind](read(task))

    return value


_FITTERS: dict[str, Callable[[object], str]] = {
    "thing": fit_thing,
    "phrase": fit_phrase,
    "character_string": fit_character_string,
}


@dataclass(frozen=True, slots=True)
class _Field:
    types: tuple[str, ...]  # the keyword types this field can be shown as
    value: Callable[[TaskRecord, str, datetime], str]  # (task, keyword type, now) -> fitted value


TASK_FIELDS: dict[str, _Field] = {
    "text": _Field(("thing",), _plain(lambda task: task.text)),
    # Why a failed or rejected task ended; "无" for a task that succeeded.
    "reason": _Field(("thing",), _plain(lambda task: task.error.message if task.error else None)),
    "status": _Field(("phrase", "thing", "character_string"), _status),
    "task_id": _Field(("character_string", "thing"), _plain(lambda task: task.task_id)),
    "created_at": _Field(("time", "date", "thing"), _timestamp("created_at")),
    "updated_at": _Field(("time", "date", "thing"), _timestamp("updated_at")),
    # Seconds of audio: "4.5秒" as thing, "4.5" as number, "4.5s" as character_string; none if it failed.
    "duration": _Field(("number", "thing", "character_string"), _duration),
    # The explicit AIGC label for the card itself: "本音频由AI生成" as thing, "智能合成" as phrase.
    "aigc": _Field(("thing", "phrase", "character_string"), _aigc),
}
KEYWORD_TYPES = ("thing", "phrase", "character_string", "time", "date", "number")
# WeChat's other keyword types; no task field fits them (there is no person's name, amount or phone).
_UNFITTED_TYPES = ("name", "letter", "symbol", "amount", "phone_number", "car_number")


@dataclass(frozen=True, slots=True)
class TemplateKeyword:
    keyword: str  # e.g. "thing1", as the template in the mini program console names it
    kind: str  # its type: the keyword less the trailing digits, e.g. "thing"
    field: str  # the task field it shows, a key of TASK_FIELDS


@dataclass(frozen=True, slots=True)
class TemplateMapping:
    """Template keywords and the task fields they show; build it with `from_pairs`."""

    keywords: tuple[TemplateKeyword, ...]

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> TemplateMapping:
        """Check (keyword, task field) pairs; a ConfigError (a ValueError) names the first bad one."""
        keywords: list[TemplateKeyword] = []
        for keyword, field in pairs:
            where = f"WECHAT_TEMPLATE_FIELDS: keyword {keyword!r}"
            match = _KEYWORD.fullmatch(keyword)
            if match is None:
                raise ConfigError(f"{where} is not a type followed by its number, such as thing1")
            kind = match.group(1)
            if kind in _UNFITTED_TYPES:
                raise ConfigError(
                    f"{where}: no task field can be shown as {kind!r}; supported types: "
                    + ", ".join(KEYWORD_TYPES)
                )
            if kind not in KEYWORD_TYPES:
                raise ConfigError(
                    f"{where}: unknown keyword type {kind!r}; supported types: " + ", ".join(KEYWORD_TYPES)
                )
            if field not in TASK_FIELDS:
                raise ConfigError(f"{where}: unknown task field {field!r}; known: " + ", ".join(TASK_FIELDS))
            if kind not in TASK_FIELDS[field].types:
                raise ConfigError(
                    f"{where}: task field {field!r} cannot be shown as {kind!r}; it fits "
                    + ", ".join(TASK_FIELDS[field].types)
                )
            if any(k.keyword == keyword for k in keywords):
                raise ConfigError(f"{where} is mapped twice")
            keywords.append(TemplateKeyword(keyword, kind, field))
        if not keywords:
            raise ConfigError("WECHAT_TEMPLATE_FIELDS: the template needs at least one keyword")
        return cls(tuple(keywords))

    def data(self, task: TaskRecord, *, now: datetime | None = None) -> dict[str, str]:
        """The template's `data` values for `task` (keyword -> fitted value); `now` stands in for a
        timestamp the task lacks."""
        now = now or datetime.now(UTC)
        return {k.keyword: TASK_FIELDS[k.field].value(task, k.kind, now) for k in self.keywords}


def task_page(task_id: str) -> str:
    """Where tapping the card leads in the mini program: the task's own page."""
    return f"pages/task/task?id={quote(task_id, safe='')}"
