"""Identifiers: unguessable (80 random bits) and sortable by creation time (48-bit milliseconds)."""

from __future__ import annotations

import base64
import secrets
import time

_ID_BYTES = 16  # 6 bytes of time + 10 bytes of randomness, 26 base32 characters


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


def is_valid_id(identifier: str, prefix: str) -> bool:
    """True for an id of this prefix made by `new_id` (cheap shape check before any lookup)."""
    return identifier.startswith(prefix + "_") and id_time_s(identifier) is not None
