"""Who owns a record: WeChat openids, and the `<owner>.<id>` keys that file records under them.

Both the event side (KV keys) and storage (object keys) file data under the owner, so the rule for
what an owner looks like lives here, below both.
"""

from __future__ import annotations

import re

# Owners are WeChat openids (28 chars of [A-Za-z0-9_-]); the bound leaves room for other id schemes.
_OWNER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_valid_owner(owner: str) -> bool:
    return bool(_OWNER_RE.fullmatch(owner))


def owned_key(owner: str, item_id: str) -> str:
    """The KV key of an owner's record: `<owner>.<id>`."""
    if not is_valid_owner(owner):
        raise ValueError("owner is not a valid openid")
    return f"{owner}.{item_id}"
