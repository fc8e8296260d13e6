"""The gateway's composition root: one Settings in, one aiohttp Application out."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

from common import vad
from common.config import Settings
from events import names
from events.bus import EventBus
from events.state import SharedState
from events.wechat_token import SharedTokenStore
from storage.keys import expiry_rules
from storage.objects import ObjectStore
from wechat_adapter import notifier, review, review_timeout
from wechat_adapter.auth import ResourceLinks, SessionKeyVault, SessionTokens
from wechat_adapter.backpressure import QueueGauge
from wechat_adapter.context import GATEWAY, Gateway
from wechat_adapter.cors import setup_cors
from wechat_adapter.errors import error_middleware
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.middleware import auth_middleware
from wechat_adapter.push_security import PushVerifier
from wechat_adapter.sensitive_words import SensitiveWords
from wechat_adapter.views import demo, docs, health, push, session, syntheses, voices
from wechat_adapter.views.common import trace_middleware
from wechat_adapter.wechat_api import WeChatClient

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    if not settings.session_secret:
        # Tokens then die with the process and differ between instances: fine for one laptop only.
        log.warning("SESSION_SECRET is not set; using a random one for this process")
        settings = dataclasses.replace(settings, session_secret=secrets.token_urlsafe(32))
    metrics = GatewayMetrics()
    # Read at start-up, so a missing or unreadable word list stops the gateway here, not a request.
    sensitive_words = SensitiveWords.configured(settings.sensitive_words_file)
    app = web.Application(
        middlewares=[trace_middleware, metrics.middleware(), error_middleware, auth_middleware],
        # JSON uploads carry base64 audio: 5 MB of audio is ~6.7 MB of text, plus the other fields.
        client_max_size=settings.upload_max_bytes * 4 // 3 + 64 * 1024,
    )
    setup_cors(app, settings.cors_origins)
    app.cleanup_ctx.append(_gateway_context(settings, metrics, sensitive_words))
    app.on_shutdown.append(_stop_streams)
    health.add_routes(app)
    session.add_routes(app)
    voices.add_routes(app)
    syntheses.add_routes(app)
    push.add_routes(app)
    docs.add_routes(app)
    demo.add_routes(app)
    return app


def _gateway_context(settings: Settings, metrics: GatewayMetrics, sensitive_words: SensitiveWords):
    async def context(app: web.Application) -> AsyncIterator[None]:
        bus = await EventBus.connect(settings.nats_urls, name="voicerelay-gateway")
        http = aiohttp.ClientSession()
        store = ObjectStore.from_settings(settings)
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="audio")
        try:
            # The VAD model loads here, so a missing model stops start-up and no upload waits for it.
            await asyncio.get_running_loop().run_in_executor(executor, vad.preload)
            await bus.ensure_topology(
                audit_max_age_s=settings.audit_max_age_s, replicas=settings.nats_replicas
            )
            await store.ensure_bucket()
            await store.ensure_lifecycle(
                expiry_rules(
                    sample_days=settings.sample_retention_days, output_days=settings.output_retention_days
                )
            )
            gateway = Gateway(
                settings=settings,
                bus=bus,
                state=SharedState(bus),
                store=store,
                wechat=WeChatClient(
                    http,
                    SharedTokenStore(bus.kv(names.WECHAT_BUCKET)),
                    api_base=settings.wechat_api_base,
                    appid=settings.wechat_appid,
                    secret=settings.wechat_secret,
                    timeout_s=settings.wechat_timeout_s,
                    observer=metrics.wechat_observer,
                ),
                tokens=SessionTokens(settings.session_secret, ttl_s=settings.session_ttl_s),
                links=ResourceLinks(settings.session_secret),
                vault=SessionKeyVault(settings.session_secret),
                metrics=metrics,
                audio_executor=executor,
                push_verifier=PushVerifier(
                    token=settings.wechat_push_token,
                    aes_key=settings.wechat_push_aes_key,
                    appid=settings.wechat_appid,
                ),
                sensitive_words=sensitive_words,
                queue=QueueGauge(bus),
            )
            app[GATEWAY] = gateway
            async with (
                notifier.running(gateway),
                review.running(gateway),
                review_timeout.running(gateway),
            ):
                log.info("gateway ready on %s", settings.public_base_url)
                yield
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            await http.close()
            await bus.close()
            store.close()
            log.info("gateway stopped")

    return context


async def _stop_streams(app: web.Application) -> None:
    if GATEWAY in app:
        app[GATEWAY].stopping.set()
