"""Ids: `id_pattern` is exactly what `is_valid_id` accepts, and every id `new_id` makes matches it."""

from __future__ import annotations

import re

import pytest

from common.ids import id_pattern, id_time_s, is_valid_id, new_id

pytestmark = pytest.mark.unit

PREFIXES = ("v", "t", "e", "tr")


def matches(identifier: str, prefix: str) -> bool:
    return re.fullmatch(id_pattern(prefix), identifier) is not None


@pytest.mark.parametrize("prefix", PREFIXES)
def test_generated_ids_match_their_pattern(prefix: str) -> None:
    for now_s in (None, 0.0, 1.7e9, 2**48 / 1000 - 1):  # now, the epoch, today, the last 48-bit ms
        for _ in range(200):
            identifier = new_id(prefix, now_s=now_s)
            assert matches(identifier, prefix), identifier
            assert is_valid_id(identifier, prefix)


def test_the_pattern_is_anchored_and_spells_the_prefix() -> None:
    assert id_pattern("v") == "^v_[a-z2-7]{26}$"
    assert id_pattern("t") == "^t_[a-z2-7]{26}$"


GOOD = new_id("v")
BODY = GOOD.removeprefix("v_")
MALFORMED = {
    "empty": "",
    "prefix only": "v_",
    "no prefix": BODY,
    "no separator": "v" + BODY,
    "other prefix": "t_" + BODY,
    "longer prefix": "vv_" + BODY,
    "prefix in upper case": "V_" + BODY,
    "body in upper case": "v_" + BODY.upper(),
    "one character short": GOOD[:-1],
    "one character long": GOOD + "a",
    "digit 0": GOOD[:-1] + "0",
    "digit 1": GOOD[:-1] + "1",
    "digit 8": GOOD[:-1] + "8",
    "digit 9": GOOD[:-1] + "9",
    "base32 padding": GOOD[:-1] + "=",
    "second separator": GOOD[:-1] + "_",
    "trailing newline": GOOD + "\n",
    "leading space": " " + GOOD,
    "embedded in more": f"x{GOOD}x",
    "non-ASCII letter": GOOD[:-1] + "é",
}


@pytest.mark.parametrize("identifier", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_ids_match_neither(identifier: str) -> None:
    assert not matches(identifier, "v")
    assert not is_valid_id(identifier, "v")
    # JSON Schema searches for a pattern, so it must be anchored at both ends. (Python's `$` also
    # matches before a final newline, ECMA 262's does not.)
    if not identifier.endswith("\n"):
        assert re.search(id_pattern("v"), identifier) is None


def test_a_matching_id_has_a_creation_time() -> None:
    identifier = new_id("t", now_s=1234.5)
    assert matches(identifier, "t")
    assert id_time_s(identifier) == 1234.5
