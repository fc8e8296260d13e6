"""The emulator's one frozen configuration object (defaults = the `common.config` test app)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from common.config import (
    EMULATOR_APPID,
    EMULATOR_PUSH_AES_KEY,
    EMULATOR_PUSH_TOKEN,
    EMULATOR_SECRET,
    EMULATOR_TEMPLATE_ID,
)
from wechat_emulator.fields import FIELD_TYPES

PUSH_MODES = frozenset({"plain", "safe"})
PUSH_FORMATS = frozenset({"json", "xml"})


def _default_template_fields() -> dict[str, str]:
    return {"thing1": "thing", "phrase2": "phrase", "character_string3": "character_string", "time4": "time"}


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulated WeChat account looks like and where it pushes verdicts.

    `push_aes_key=""` means plain mode whatever `push_mode` says: without an EncodingAESKey
    WeChat cannot encrypt, and that is how a developer switches safe mode off.
    """

    appid: str = EMULATOR_APPID
    secret: str = EMULATOR_SECRET
    push_url: str | None = None  # the gateway's /wechat/push URL, where verdicts are POSTed
    push_token: str = EMULATOR_PUSH_TOKEN
    push_aes_key: str = EMULATOR_PUSH_AES_KEY
    push_mode: str = "safe"  # "plain": body as is, `signature` only; "safe": AES, `msg_signature`
    push_format: str = "json"  # "json" or "xml", as chosen in the mini program's push settings
    media_verdict_delay_s: float = 0.0
    template_id: str = EMULATOR_TEMPLATE_ID
    template_fields: dict[str, str] = field(default_factory=_default_template_fields)  # keyword -> type
    push_timeout_s: float = 5.0  # WeChat waits 5 s for `success`, then retries
    push_attempts: int = 3  # one push plus two retries, as WeChat does
    push_retry_delay_s: float = 1.0
    shutdown_grace_s: float = 2.0  # how long closing the app waits for pending media checks before cancelling

    def __post_init__(self) -> None:
        if self.push_mode not in PUSH_MODES:
            raise ValueError(f"push_mode must be one of {sorted(PUSH_MODES)}, got {self.push_mode!r}")
        if self.push_format not in PUSH_FORMATS:
            raise ValueError(f"push_format must be one of {sorted(PUSH_FORMATS)}, got {self.push_format!r}")
        if self.push_aes_key and len(self.push_aes_key) != 43:
            raise ValueError("push_aes_key must be the 43-character EncodingAESKey (or empty for plain mode)")
        unknown = {t for t in self.template_fields.values() if t not in FIELD_TYPES}
        if unknown:
            raise ValueError(f"unknown template field types {sorted(unknown)}; known: {sorted(FIELD_TYPES)}")
        if self.push_attempts < 1:
            raise ValueError("push_attempts must be at least 1")

    @property
    def safe_mode(self) -> bool:
        """True when pushes are encrypted (safe mode asked for and an AES key given)."""
        return self.push_mode == "safe" and bool(self.push_aes_key)

    @property
    def original_id(self) -> str:
        """The account's `gh_…` id that pushes carry as ToUserName, derived from the appid."""
        return "gh_" + hashlib.sha1(self.appid.encode()).hexdigest()[:12]
