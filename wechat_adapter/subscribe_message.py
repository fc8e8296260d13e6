"""Filling a subscription-message template: each value fitted to its keyword type's rules.

WeChat silently drops or refuses (47003) values that break the rules, so we fit them here:
`thing` ≤ 20 characters, `phrase` ≤ 5 Chinese characters, `character_string` ≤ 32 ASCII,
`time` a date-time, and no control characters anywhere.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta, timezone

from events.records import TaskRecord, TaskStatus

CHINA_TZ = timezone(timedelta(hours=8))
_CHINESE = re.compile(r"[\u4e00-\u9fff]")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]")


def _without_controls(value: str) -> str:
    return "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()


def fit_thing(value: str, limit: int = 20) -> str:
    value = _without_controls(value) or "-"
    return value if len(value) <= limit else value[: limit - 1] + "…"


def fit_phrase(value: str) -> str:
    return "".join(_CHINESE.findall(value))[:5] or "完成"


def fit_character_string(value: str) -> str:
    return "".join(_PRINTABLE_ASCII.findall(value))[:32] or "-"


def fit_time(iso_time: str) -> str:
    """An ISO-8601 UTC time shown as Beijing time, the way the WeChat card expects."""
    moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


_FITTERS = {
    "thing": fit_thing,
    "phrase": fit_phrase,
    "character_string": fit_character_string,
    "time": fit_time,
}

_STATUS_PHRASES = {
    TaskStatus.SUCCEEDED: "合成完成",
    TaskStatus.FAILED: "合成失败",
    TaskStatus.REJECTED: "未通过",
}

# Template keyword -> (keyword type, task field). Matches the emulator's test template; a real
# template's keywords are configured to match the one chosen in the mini program console.
DEFAULT_TEMPLATE_FIELDS: dict[str, tuple[str, str]] = {
    "thing1": ("thing", "text"),
    "phrase2": ("phrase", "status"),
    "character_string3": ("character_string", "task_id"),
    "time4": ("time", "updated_at"),
}


def task_values(task: TaskRecord) -> dict[str, str]:
    """The task fields a template may show, as raw strings."""
    return {
        "text": task.text if task.error is None else f"{task.error.message}",
        "status": _STATUS_PHRASES.get(task.status, "已更新"),
        "task_id": task.task_id,
        "updated_at": task.updated_at,
        "created_at": task.created_at,
    }


def template_data(
    task: TaskRecord, fields: dict[str, tuple[str, str]] = DEFAULT_TEMPLATE_FIELDS
) -> dict[str, str]:
    values = task_values(task)
    return {keyword: _FITTERS[kind](values[source]) for keyword, (kind, source) in fields.items()}


def task_page(task_id: str) -> str:
    """Where tapping the card leads in the mini program."""
    return f"pages/task/task?id={task_id}"
