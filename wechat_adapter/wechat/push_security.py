"""Verifying and opening WeChat message pushes: plain, compatible and safe (AES) modes.

wechatpy computes the signatures (`WeChatSigner`) and decrypts (`WeChatCrypto`, which also checks
the appid inside the ciphertext); we compare signatures in constant time, which wechatpy does not,
and refuse stale timestamps so a captured push cannot be replayed later.

Which modes are accepted depends on WECHAT_PUSH_AES_KEY:
- with a key, only what the key proves: `encrypt_type=aes` with a valid `msg_signature`, and only the
  decrypted `Encrypt` is read. A plaintext push is refused even with a valid plain `signature`, which
  covers only the token, timestamp and nonce, never the body: anyone who saw one signed query could
  attach any verdict to it. Compatible mode (plaintext fields beside `Encrypt`, `encrypt_type=aes`)
  is accepted, but its plaintext fields are ignored: they are exactly that unsigned body.
- without a key (plain mode), the plain `signature` is all WeChat offers, and is accepted.

Replays within the staleness window are the caller's to refuse: `replay_key` names a push by its
timestamp, nonce and signature, and views/push.py claims that key once in KV (every instance sees
the claim). `PushVerifier` itself stays pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import time
from collections.abc import Mapping
from typing import Any

import xmltodict
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import WeChatSigner

MAX_CLOCK_SKEW_S = 300
MAX_BODY_BYTES = 64 * 1024


class PushRejected(Exception):
    """A push that is forged, stale or malformed; nothing may change because of it."""


def _signature(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


def _parse(text: str) -> dict[str, Any]:
    text = text.strip()
    try:
        if text.startswith("{"):
            message = json.loads(text)
        else:
            message = xmltodict.parse(text, disable_entities=True).get("xml")
    except Exception as exc:  # xmltodict raises expat errors of several kinds
        raise PushRejected(f"unparseable body: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise PushRejected("body is not an object")
    return message


class PushVerifier:
    def __init__(self, *, token: str, aes_key: str, appid: str) -> None:
        self._token = token
        self._crypto = WeChatCrypto(token, aes_key, appid) if aes_key else None

    def _check(self, params: Mapping[str, str], now_s: float | None) -> tuple[str, str]:
        timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
        if not (timestamp.isascii() and timestamp.isdigit()) or not nonce:  # int() refuses "²"
            raise PushRejected("missing timestamp or nonce")
        if abs((now_s or time.time()) - int(timestamp)) > MAX_CLOCK_SKEW_S:
            raise PushRejected("stale timestamp")
        expected = _signature(self._token, timestamp, nonce)
        if not hmac.compare_digest(expected, params.get("signature", "")):
            raise PushRejected("bad signature")
        return timestamp, nonce

    def verify_url(self, params: Mapping[str, str], *, now_s: float | None = None) -> str:
        """The GET handshake: the echostr to send back."""
        self._check(params, now_s)
        return params.get("echostr", "")

    def open(self, params: Mapping[str, str], body: bytes, *, now_s: float | None = None) -> dict[str, Any]:
        """The push as a dict, decrypted when encrypted; raises PushRejected for anything suspicious."""
        timestamp, nonce = self._check(params, now_s)
        if len(body) > MAX_BODY_BYTES:
            raise PushRejected("body too large")
        try:
            message = _parse(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise PushRejected("body is not UTF-8") from None
        if params.get("encrypt_type", "raw") != "aes":
            if self._crypto is not None:
                raise PushRejected("plaintext push while an EncodingAESKey is configured (safe mode only)")
            return message
        if self._crypto is None:
            raise PushRejected("encrypted push but no EncodingAESKey configured")
        encrypted = message.get("Encrypt")
        msg_signature = params.get("msg_signature", "")
        if not isinstance(encrypted, str) or not hmac.compare_digest(
            _signature(self._token, timestamp, nonce, encrypted), msg_signature
        ):
            raise PushRejected("bad msg_signature")
        try:
            plain = self._crypto.decrypt_message({"Encrypt": encrypted}, msg_signature, timestamp, nonce)
        except InvalidAppIdException:
            raise PushRejected("push is for another appid") from None
        except (InvalidSignatureException, ValueError, IndexError, struct.error) as exc:
            # wechatpy unpads and unpacks without checks, so garbage surfaces as whatever the
            # slicing or struct.unpack of it raises; all of them mean "not from WeChat".
            raise PushRejected(f"cannot decrypt: {type(exc).__name__}") from None
        return _parse(plain if isinstance(plain, str) else plain.decode("utf-8"))


def replay_key(params: Mapping[str, str]) -> str:
    """The name of one push for replay detection: sha256 of its timestamp, nonce and signature (the
    msg_signature in safe mode, which also covers the body). Call after the push was verified."""
    parts = (params.get("timestamp", ""), params.get("nonce", ""), params.get("msg_signature", ""))
    plain = params.get("signature", "")
    return hashlib.sha256("\0".join((*parts, plain)).encode()).hexdigest()
