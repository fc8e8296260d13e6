"""Identifiers: unguessable (80 random bits) and sortable by creation time (48-bit milliseconds)."""

from __future__ import annotations

import base64
import re
import secrets
import time

_ID_BYTES = 16  # 6 bytes of time + 10 bytes of randomness, 26 base32 characters
# RFC 4648 base32 without its padding, lowercased: what `new_id` writes after the prefix.
_ID_BODY = "[a-z2-7]{26}"


def new_id(prefix: str, *, now_s: float | None = None) -> str:
    """A fresh id such as ``t_01jd…``; ids made later sort after earlier ones."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    raw = ms.to_bytes(6, "big") + secrets.token_bytes(_ID_BYTES - 6)
    return f"{prefix}_{base64.b32encode(raw).decode().rstrip('=').lower()}"


def id_time_s(identifier: str) -> float | None:
    """When an id from `new_id` was made, or None if it is not one of ours."""
    _, _, body = identifier.partition("_")
    if len(body) != 26:
        return None
    try:
        raw = base64.b32decode(body.upper() + "======")
    except ValueError:
        return None
    return int.from_bytes(raw[:6], "big") / 1000


def id_pattern(prefix: str) -> str:
    """The anchored regex (Python and JSON Schema alike) of this prefix's ids, as `is_valid_id` checks.

    Every id `new_id(prefix)` makes matches it. Its last character carries 3 data bits and 2 zero
    padding bits, so `new_id` only ever ends on one of 8 characters; the pattern, like base32
    decoding, allows all 32 there. In Python, use it with `re.fullmatch`: there `$` also matches
    before a final newline.
    """
    return f"^{re.escape(prefix)}_{_ID_BODY}$"


def is_valid_id(identifier: str, prefix: str) -> bool:
    """True for an id of this prefix shaped as `new_id` makes them (cheap check before any lookup)."""
    return re.fullmatch(id_pattern(prefix), identifier) is not None
