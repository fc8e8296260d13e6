"""Value rules of subscription-message template keywords, by keyword type.

WeChat rejects a whole send with 47003 when one value breaks its type's rule, naming the field
(`argument invalid! data.thing1.value exceeds limit`). Emulating the rules strictly is the point:
a notifier that truncates a Chinese title badly must fail in tests, not in production.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable

TOO_LONG = "exceeds limit"
INVALID = "invalid"

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff"
_DATE = r"(?P<y>\d{4})(?:-|/|年)(?P<mo>\d{1,2})(?:-|/|月)(?P<d>\d{1,2})日?"
_CLOCK = r"(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?"
_TIME_POINT = re.compile(rf"(?:{_DATE})?\s*(?:{_CLOCK})?")


def has_control_chars(text: str) -> bool:
    """True if `text` holds a control character (newline and tab included), which WeChat refuses."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _limited(limit: int, pattern: str) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def rule(value: str) -> str | None:
        if len(value) > limit:
            return TOO_LONG
        return None if compiled.fullmatch(value) else INVALID

    return rule


def _time_point_ok(text: str, *, need_date: bool, need_clock: bool) -> bool:
    match = _TIME_POINT.fullmatch(text.strip())
    if match is None or not text.strip():
        return False
    has_date, has_clock = match["y"] is not None, match["h"] is not None
    if (need_date and not has_date) or (need_clock and not has_clock) or not (has_date or has_clock):
        return False
    if has_date:
        try:
            datetime.date(int(match["y"]), int(match["mo"]), int(match["d"]))
        except ValueError:
            return False
    if has_clock:
        return int(match["h"]) < 24 and int(match["mi"]) < 60 and int(match["s"] or 0) < 60
    return True


def _time_rule(*, need_date: bool, need_clock: bool) -> Callable[[str], str | None]:
    """`time`/`date`: one point in time, or a range of two joined by `~`."""

    def rule(value: str) -> str | None:
        points = value.split("~")
        if len(points) > 2:
            return INVALID
        ok = all(_time_point_ok(p, need_date=need_date, need_clock=need_clock) for p in points)
        return None if ok else INVALID

    return rule


def _name(value: str) -> str | None:
    """`name`: up to 10 Chinese characters, or up to 20 letters and symbols."""
    if re.fullmatch(rf"[{_HAN}]+", value):
        return None if len(value) <= 10 else TOO_LONG
    if len(value) > 20:
        return TOO_LONG
    return None if re.fullmatch(r"[^\d\s]+", value) and value.isascii() else INVALID


_RULES: dict[str, Callable[[str], str | None]] = {
    "thing": _limited(20, r".+"),
    "phrase": _limited(5, rf"[{_HAN}]+"),
    "character_string": _limited(32, r"[\x20-\x7e]+"),
    "number": _limited(32, r"-?\d+(?:\.\d+)?"),
    "letter": _limited(32, r"[A-Za-z]+"),
    "amount": _limited(16, r"[¥$€£]?\d{1,10}(?:\.\d{1,2})?元?"),
    "phone_number": _limited(17, r"[\d+\-() ]+"),
    "time": _time_rule(need_date=False, need_clock=True),
    "date": _time_rule(need_date=True, need_clock=False),
    "name": _name,
}

FIELD_TYPES: frozenset[str] = frozenset(_RULES)


def check_value(field_type: str, value: str) -> str | None:
    """Why `value` breaks the rule of `field_type` (`exceeds limit` / `invalid`), or None if it obeys."""
    if not value or has_control_chars(value):
        return INVALID
    return _RULES[field_type](value)
