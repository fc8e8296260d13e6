"""PushVerifier on its own: any tampering with a safe-mode ciphertext is a rejection, never a crash.

The decryptor underneath unpads and unpacks without checks, so which low-level error a tampered
ciphertext produces depends on the random IV of that push. This sweeps enough tamperings to hit
each kind instead of relying on the one a test run happens to draw.
"""

from __future__ import annotations

import base64
import json
import random

import pytest

from wechat_adapter.wechat.push_security import PushRejected, PushVerifier
from wechat_emulator.config import EmulatorConfig
from wechat_emulator.push import PushEncoder, sha1_signature

CONFIG = EmulatorConfig()


def _verifier() -> PushVerifier:
    return PushVerifier(token=CONFIG.push_token, aes_key=CONFIG.push_aes_key, appid=CONFIG.appid)


def _resigned(query: dict[str, str], encrypted: bytes) -> tuple[dict[str, str], bytes]:
    """A push carrying `encrypted` with a valid msg_signature: only decryption can refuse it."""
    text = base64.b64encode(encrypted).decode()
    signature = sha1_signature(CONFIG.push_token, query["timestamp"], query["nonce"], text)
    return query | {"msg_signature": signature}, json.dumps({"Encrypt": text}).encode()


def test_an_untampered_push_opens() -> None:
    request = PushEncoder(CONFIG).encode({"Event": "wxa_media_check", "trace_id": "t1"})
    assert _verifier().open(request.query, request.body)["trace_id"] == "t1"


@pytest.mark.parametrize("seed", range(64))
def test_tampered_ciphertext_is_always_rejected(seed: int) -> None:
    rng = random.Random(seed)
    request = PushEncoder(CONFIG).encode({"Event": "wxa_media_check", "trace_id": f"t{seed}"})
    raw = bytearray(base64.b64decode(json.loads(request.body)["Encrypt"]))
    for _ in range(rng.randint(1, 3)):
        raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
    query, body = _resigned(dict(request.query), bytes(raw))
    with pytest.raises(PushRejected):
        _verifier().open(query, body)


@pytest.mark.parametrize("length", [0, 16, 32, 48])
def test_short_or_empty_ciphertext_is_rejected(length: int) -> None:
    request = PushEncoder(CONFIG).encode({"Event": "wxa_media_check", "trace_id": "t"})
    raw = base64.b64decode(json.loads(request.body)["Encrypt"])[:length]
    query, body = _resigned(dict(request.query), raw)
    with pytest.raises(PushRejected):
        _verifier().open(query, body)
