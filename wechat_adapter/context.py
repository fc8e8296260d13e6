"""The gateway's shared resources, as request handlers see them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from common.config import Settings
from events.bus import EventBus
from events.state import SharedState
from storage.objects import ObjectStore
from wechat_adapter.auth import ResourceLinks, SessionKeyVault, SessionTokens
from wechat_adapter.backpressure import QueueGauge
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.push_security import PushVerifier
from wechat_adapter.sensitive_words import SensitiveWords
from wechat_adapter.wechat_api import WeChatClient


@dataclass
class Gateway:
    """Everything a request handler may use; built once per app, torn down in reverse order."""

    settings: Settings
    bus: EventBus
    state: SharedState
    store: ObjectStore
    wechat: WeChatClient
    tokens: SessionTokens
    links: ResourceLinks
    vault: SessionKeyVault
    metrics: GatewayMetrics
    push_verifier: PushVerifier
    queue: QueueGauge
    # The local word list, read once at start-up; matching it is pure CPU work of microseconds.
    sensitive_words: SensitiveWords
    # Audio decoding is CPU work: it runs here, never on the event loop.
    audio_executor: ThreadPoolExecutor
    # Set when the app stops, so long-lived responses (SSE) end instead of holding shutdown up.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def public_url(self, path: str) -> str:
        return self.settings.public_base_url + path


GATEWAY = web.AppKey("gateway", Gateway)
