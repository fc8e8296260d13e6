"""Crypto-shredding: a user's words travel sealed in events, with a key of their own that erasure destroys.

The audit stream keeps every event for AUDIT_MAX_AGE_S and cannot be edited. So what a person wrote
(a synthesis text, a voice's transcript) goes into events sealed (AES-256-GCM) under a random key
kept per user in KV (`names.USER_KEYS_BUCKET`). Whoever reads KV and the stream, the workers and
`ops replay`, opens the fields; once `DELETE /v1/me` destroys the key, those fields of every event of
that user, in the stream and in any copy of it, read as `[erased]`.

A sealed field is the JSON object `{"sealed": "<base64 of nonce and ciphertext>"}`. Its associated
data is the owner and the field's name, so a value copied into another user's event, or into another
field, does not open. Events from before sealing hold plain strings, which read as themselves.

A key lives in KV a day longer than the stream keeps events, and is renewed (written again) when it
is used a day after it was last written: an event can be opened as long as it exists, and the key of
a user who stopped coming expires after their last event does.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

from common.owners import is_valid_owner
from events import names
from events.bus import USER_KEY_SLACK_S, EventBus

# The fields of event data that hold a person's words.
SEALED_FIELDS = ("text", "prompt_text")
# What a field reads as once its key is gone (or when it does not open).
ERASED = "[erased]"

_KEY_BYTES = 32
_NONCE_BYTES = 12
_ABSENT = (KeyNotFoundError, KeyDeletedError)
_WRITE_ATTEMPTS = 5


class UserKeyRecord(msgspec.Struct, frozen=True):
    key: str  # base64 of 32 random bytes
    written_at_s: float  # epoch seconds of the last write: renewed a day after it


class UserKeys:
    """Each user's sealing key in KV, `<owner>` -> UserKeyRecord; made on first use."""

    def __init__(
        self, bus: EventBus, bucket: str = names.USER_KEYS_BUCKET, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._bus = bus
        self._kv = bus.kv(bucket)
        self._bucket = bucket
        self._clock = clock

    async def key_for(self, owner: str) -> bytes:
        """The owner's key, made now if they have none; renewed when last written over a day ago."""
        _check(owner)
        for _ in range(_WRITE_ATTEMPTS):
            found = await self._record(owner)
            if found is None:
                key = os.urandom(_KEY_BYTES)
                try:
                    await self._kv.create(owner, self._encode(key))
                except (KeyWrongLastSequenceError, *_ABSENT):
                    continue  # another request made (or an erasure destroyed) it meanwhile: read again
                return key
            record, revision = found
            key = base64.b64decode(record.key)
            if self._clock() - record.written_at_s > USER_KEY_SLACK_S:
                try:  # compare-and-set: a key an erasure destroyed since is not brought back
                    await self._kv.update(owner, self._encode(key), last=revision)
                except (KeyWrongLastSequenceError, *_ABSENT):
                    continue
            return key
        raise RuntimeError(f"the sealing key of {owner} kept changing")

    async def find(self, owner: str) -> bytes | None:
        """The owner's key, or None: they never had one, or it was destroyed (erasure) or expired."""
        _check(owner)
        found = await self._record(owner)
        return None if found is None else base64.b64decode(found[0].key)

    async def destroy(self, owner: str) -> None:
        """Erasure: from now on nothing sealed for `owner` opens. The key's history goes with it."""
        _check(owner)
        await self._bus.purge_kv(self._bucket, owner)

    def _encode(self, key: bytes) -> bytes:
        return _encoder.encode(UserKeyRecord(base64.b64encode(key).decode(), self._clock()))

    async def _record(self, owner: str) -> tuple[UserKeyRecord, int] | None:
        try:
            entry = await self._kv.get(owner)
        except _ABSENT:
            return None
        if not entry.value or entry.operation in {"DEL", "PURGE"} or entry.revision is None:
            return None
        return _decoder.decode(entry.value), entry.revision


def seal(key: bytes, owner: str, field: str, text: str) -> dict[str, str]:
    """`text` as a sealed field of `owner`'s event."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, text.encode(), _associated(owner, field))
    return {"sealed": base64.b64encode(nonce + sealed).decode()}


def open_field(key: bytes | None, owner: str, field: str, value: object) -> object:
    """A field as written: plain values as they are, a sealed one opened, or ERASED without its key."""
    if not is_sealed(value):
        return value
    if key is None:
        return ERASED
    try:
        raw = base64.b64decode(value["sealed"], validate=True)  # type: ignore[index]
        opened = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _associated(owner, field))
    except (ValueError, InvalidTag):
        return ERASED
    return opened.decode()


def seal_fields(data: Mapping[str, Any], key: bytes, owner: str) -> dict[str, Any]:
    """`data` with every text field of SEALED_FIELDS sealed (other fields as they are)."""
    return {
        name: seal(key, owner, name, value) if name in SEALED_FIELDS and isinstance(value, str) else value
        for name, value in data.items()
    }


def open_fields(data: Mapping[str, Any], key: bytes | None, owner: str) -> dict[str, Any]:
    """`data` with every sealed field opened, or ERASED where its key is gone."""
    return {name: open_field(key, owner, name, value) for name, value in data.items()}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UserKeyRecord)


def is_sealed(value: object) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("sealed"), str)


def _associated(owner: str, field: str) -> bytes:
    return f"voicerelay:sealed:{owner}:{field}".encode()


def _check(owner: str) -> None:
    if not is_valid_owner(owner):
        raise ValueError("owner is not a valid openid")
