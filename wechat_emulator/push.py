"""How WeChat signs, encrypts and serialises a message push (per WeChat's message-push docs).

Every push carries `signature = sha1(sorted([token, timestamp, nonce]))`, `timestamp` and `nonce`
in the query. Safe mode adds `encrypt_type=aes` and `msg_signature = sha1(sorted([token, timestamp,
nonce, Encrypt]))`, and the body becomes `{"ToUserName", "Encrypt"}` (or its XML form) where
`Encrypt` is the whole event, serialised in the configured format, encrypted by WeChat's scheme.
The encryption is wechatpy's own, so the gateway's `WeChatCrypto.decrypt_message` must accept it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wechatpy.crypto import PrpCrypto, WeChatCrypto

from wechat_emulator.config import EmulatorConfig


@dataclass(frozen=True)
class PushRequest:
    """One signed push, ready to POST: the query parameters and the body bytes."""

    query: dict[str, str]
    body: bytes
    content_type: str


def sha1_signature(*parts: str) -> str:
    """WeChat's push signature: SHA-1 of the sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def to_xml(message: Mapping[str, Any]) -> str:
    """Render a push message as WeChat's XML: strings in CDATA, numbers bare, lists as repeated tags."""
    parts = ["<xml>"]
    for key, value in message.items():
        _render_xml(parts, key, value)
    parts.append("</xml>")
    return "".join(parts)


def _render_xml(parts: list[str], key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        parts.append(f"<{key}>")
        for child_key, child in value.items():
            _render_xml(parts, child_key, child)
        parts.append(f"</{key}>")
    elif isinstance(value, list):
        for item in value:
            _render_xml(parts, key, item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parts.append(f"<{key}>{value}</{key}>")
    else:
        text = str(value).replace("]]>", "]]]]><![CDATA[>")  # a CDATA section cannot hold "]]>"
        parts.append(f"<{key}><![CDATA[{text}]]></{key}>")


class PushEncoder:
    """Turns a push message into the request WeChat would send under one account's push settings."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._prp = (
            PrpCrypto(WeChatCrypto(config.push_token, config.push_aes_key, config.appid).key)
            if config.safe_mode
            else None
        )

    def encode(
        self, message: Mapping[str, Any], *, timestamp: int | None = None, nonce: str | None = None
    ) -> PushRequest:
        """Sign (and in safe mode encrypt) `message`; a fresh timestamp and nonce unless given."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or str(secrets.randbelow(10**10))
        token = self._config.push_token
        query = {"signature": sha1_signature(token, ts, nonce), "timestamp": ts, "nonce": nonce}
        plaintext = self._serialise(message)
        if self._prp is None:
            return PushRequest(query, plaintext.encode(), self._content_type)
        encrypted = self._prp.encrypt(plaintext, self._config.appid).decode()
        query |= {"encrypt_type": "aes", "msg_signature": sha1_signature(token, ts, nonce, encrypted)}
        envelope = {"ToUserName": message.get("ToUserName", self._config.original_id), "Encrypt": encrypted}
        return PushRequest(query, self._serialise(envelope).encode(), self._content_type)

    @property
    def _content_type(self) -> str:
        return "application/json" if self._config.push_format == "json" else "text/xml"

    def _serialise(self, message: Mapping[str, Any]) -> str:
        if self._config.push_format == "json":
            return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        return to_xml(message)
