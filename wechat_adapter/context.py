"""The gateway's shared resources, and the caller a piece of domain code acts for."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common.config import Settings
from events.bus import EventBus
from events.state import SharedState
from events.supervision import Supervisor
from storage.objects import ObjectStore
from wechat_adapter.auth import ResourceLinks, SessionKeyVault, SessionRevocationCheck, SessionTokens
from wechat_adapter.backpressure import QueueGauge, Slots
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.sensitive_words import SensitiveWords
from wechat_adapter.wechat.api import WeChatClient
from wechat_adapter.wechat.push_security import PushVerifier


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for: the authenticated user, and the trace id its events and logs carry."""

    owner: str
    trace_id: str


@dataclass
class Gateway:
    """Everything the gateway's code may use; built once per app, torn down in reverse order."""

    settings: Settings
    bus: EventBus
    state: SharedState
    store: ObjectStore
    wechat: WeChatClient
    tokens: SessionTokens
    # Whether a validly signed token was revoked since (logout, a high-risk login): KV behind a cache.
    revocations: SessionRevocationCheck
    links: ResourceLinks
    vault: SessionKeyVault
    metrics: GatewayMetrics
    push_verifier: PushVerifier
    queue: QueueGauge
    # The local word list, read once at start-up; matching it is pure CPU work of microseconds.
    sensitive_words: SensitiveWords
    # Audio decoding is CPU work: it runs here, never on the event loop.
    audio_executor: ThreadPoolExecutor
    # Uploads being decoded at once; the next one is refused with 503 `overloaded`.
    decode_slots: Slots
    # Long-lived responses (SSE) open in this process (wechat_adapter.streams).
    stream_slots: Slots
    # The background consumers and tasks (notifier, review, review timeout); /readyz reports them.
    background: Supervisor
    # Set when the app stops, so long-lived responses (SSE) end instead of holding shutdown up.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def public_url(self, path: str) -> str:
        return self.settings.public_base_url + path
