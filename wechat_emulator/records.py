"""What the emulator remembers about traffic, as plain dataclasses that serialise to JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SUGGESTS = ("pass", "review", "risky")  # in rising severity


@dataclass
class RecordedCall:
    """One WeChat API call received. `details` grows later for work done after the answer
    (a media check's download status and size); `errcode` is what the call was answered."""

    api: str
    method: str
    query: dict[str, str]
    body: Any  # the parsed JSON body, the raw text when it was not JSON, None when empty
    at_s: float  # wall-clock time received
    errcode: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushAttempt:
    """One POST of a verdict to the push URL and what the gateway answered."""

    trace_id: str
    url: str
    attempt: int
    query: dict[str, str]
    status: int | None  # None when no HTTP answer came (refused, timed out)
    response_body: str
    error: str | None
    at_s: float

    @property
    def delivered(self) -> bool:
        """WeChat counts a push delivered on HTTP 200; anything else is retried."""
        return self.status == 200


@dataclass(frozen=True)
class Verdict:
    """A content-security verdict: `suggest` is pass/review/risky; `label` 100 means normal.

    Media pushes carry `label` as WeChat currently does (a string such as "100") unless told otherwise.
    """

    suggest: str
    label: int | str

    def __post_init__(self) -> None:
        if self.suggest not in SUGGESTS:
            raise ValueError(f"suggest must be one of {SUGGESTS}, got {self.suggest!r}")

    @property
    def severity(self) -> int:
        return SUGGESTS.index(self.suggest)
