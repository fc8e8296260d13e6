"""Who is calling: bearer session tokens, signed resource links, and the session_key vault.

Tokens are itsdangerous signatures over the openid with an issue time, so any gateway instance
sharing SESSION_SECRET verifies them without a lookup. `session_key` is sealed with AES-GCM.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from itsdangerous import BadSignature, URLSafeTimedSerializer

from common.owners import is_valid_owner


def _derive(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"voicerelay:{purpose}:{secret}".encode()).digest()


class SessionTokens:
    """Bearer tokens for the mini program: `openid` signed with an expiry."""

    def __init__(self, secret: str, *, ttl_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="voicerelay.session")
        self.ttl_s = ttl_s

    def issue(self, openid: str) -> str:
        return self._serializer.dumps({"o": openid})

    def verify(self, token: str) -> str | None:
        """The openid a valid, unexpired token was issued for, else None."""
        try:
            payload = self._serializer.loads(token, max_age=self.ttl_s)
        except BadSignature:  # also SignatureExpired, its subclass
            return None
        openid = payload.get("o") if isinstance(payload, dict) else None
        return openid if isinstance(openid, str) and is_valid_owner(openid) else None


class ResourceLinks:
    """Short-lived signed links for URLs fetched without our headers (InnerAudioContext, WeChat)."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="voicerelay.link")

    def sign(self, kind: str, owner: str, item_id: str) -> str:
        return self._serializer.dumps([kind, owner, item_id])

    def verify(self, token: str, kind: str, *, max_age_s: int) -> tuple[str, str] | None:
        """(owner, item_id) of a valid link of this kind, else None."""
        try:
            signed_kind, owner, item_id = self._serializer.loads(token, max_age=max_age_s)
        except (BadSignature, ValueError, TypeError):
            return None
        if signed_kind != kind or not is_valid_owner(owner):
            return None
        return owner, item_id


class SessionKeyVault:
    """Seals WeChat's session_key for storage; it is never returned to clients nor logged."""

    def __init__(self, secret: str) -> None:
        self._aead = AESGCM(_derive(secret, "session-key"))

    def seal(self, session_key: str, owner: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, session_key.encode(), owner.encode())
        return base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, owner: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], owner.encode()).decode()
