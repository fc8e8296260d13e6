"""The gateway's composition root: one Settings in, one aiohttp Application out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

from common import vad
from common.config import (
    EMULATOR_PUSH_AES_KEY,
    EMULATOR_PUSH_TOKEN,
    ConfigError,
    Settings,
    check_session_secrets,
)
from events import names
from events.bus import KV_BUCKETS, EventBus
from events.state import SharedState
from events.supervision import Supervisor, shutdown_executor
from events.wechat_token import SharedTokenStore
from storage.keys import expiry_rules
from storage.objects import ObjectStore
from wechat_adapter import notifier, review, task_recovery
from wechat_adapter.auth import ResourceLinks, SessionKeyVault, SessionRevocationCheck, SessionTokens
from wechat_adapter.backpressure import QueueGauge, Slots
from wechat_adapter.context import Gateway
from wechat_adapter.http.auth import auth_middleware
from wechat_adapter.http.cors import setup_cors
from wechat_adapter.http.errors import error_middleware
from wechat_adapter.http.metrics import metrics_middleware
from wechat_adapter.http.requests import GATEWAY, trace_middleware
from wechat_adapter.metrics import GatewayMetrics
from wechat_adapter.review_timeout import MAX_SWEEP_INTERVAL_S, ReviewTimeoutSweeper
from wechat_adapter.sensitive_words import SensitiveWords
from wechat_adapter.streams import STREAMS_PER_GATEWAY
from wechat_adapter.task_recovery import StaleTaskSweeper
from wechat_adapter.views import demo, docs, health, me, push, session, stream_socket, syntheses, voices
from wechat_adapter.wechat.api import WeChatClient
from wechat_adapter.wechat.push_security import PushVerifier

log = logging.getLogger(__name__)

# How long a consumer's message in hand may take to finish when the gateway stops, before it is
# handed back to JetStream.
CONSUMER_GRACE_S = 30.0
REVIEW_TIMEOUT_SWEEPER = "review-timeout-sweeper"
STALE_TASK_SWEEPER = "stale-task-sweeper"
# Threads that decode uploads, and how many uploads may be in decoding at once, waiting for a thread
# included: a decode takes 50-100 ms, so a queue of this size absorbs a burst (a class of students
# enrolling at once) within a few seconds, while a flood is refused (503) at once instead of queueing
# ever more decodes (and their decoded PCM) behind the two threads. The bodies themselves are already
# read by then: what bounds those is the body limit and the per-user upload limit.
AUDIO_THREADS = 2
DECODE_SLOTS = 32


def check_settings(settings: Settings) -> None:
    """Refuse (ConfigError) settings the gateway must not start with, beyond what `Settings.from_env`
    checks of each value alone:

    - SESSION_SECRET or SESSION_SECRET_PREVIOUS shorter than 32 bytes (from_env checks it too; this
      catches Settings built in code);
    - the emulator's well-known push Token or EncodingAESKey while WECHAT_API_BASE is real WeChat:
      anyone can read them in this repository and forge verdicts. Checked here, not at Settings load,
      since the defaults pair real WeChat with the emulator's values and workers or `ops` commands
      that never receive a push must still load them;
    - MEDIA_REVIEW_TIMEOUT_S that the media-check record does not outlive by a sweep interval: the
      timeout sweeper needs the record to decide the voice, which would otherwise stay pending;
    - a token lifetime longer than revocations are kept: a revoked token would come back to life.
    """
    check_session_secrets(settings.session_secret, settings.session_secret_previous)
    if settings.uses_real_wechat:
        for name, value, emulators in (
            ("WECHAT_PUSH_TOKEN", settings.wechat_push_token, EMULATOR_PUSH_TOKEN),
            ("WECHAT_PUSH_AES_KEY", settings.wechat_push_aes_key, EMULATOR_PUSH_AES_KEY),
        ):
            if value == emulators:
                raise ConfigError(
                    f"{name} is the WeChat emulator's published test value, but WECHAT_API_BASE is real "
                    "WeChat: set the one of your mini program (README, WeChat configuration)"
                )
    record_ttl_s = KV_BUCKETS[names.MEDIA_CHECKS_BUCKET] or float("inf")
    if settings.media_review_timeout_s > record_ttl_s - MAX_SWEEP_INTERVAL_S:
        raise ConfigError(
            f"MEDIA_REVIEW_TIMEOUT_S must be at most {record_ttl_s - MAX_SWEEP_INTERVAL_S:.0f}, got "
            f"{settings.media_review_timeout_s}: a media check's record lives {record_ttl_s:.0f} s and the "
            "timeout sweeper needs it to decide the voice"
        )
    revocation_ttl_s = KV_BUCKETS[names.REVOKED_SESSIONS_BUCKET] or float("inf")
    if settings.session_ttl_s > revocation_ttl_s:
        raise ConfigError(
            f"session_ttl_s ({settings.session_ttl_s}) outlives revocations ({revocation_ttl_s:.0f} s)"
        )


def create_app(settings: Settings) -> web.Application:
    check_settings(settings)
    if not settings.session_secret:
        # Tokens then die with the process and differ between instances: fine for one laptop only.
        log.warning("SESSION_SECRET is not set; using a random one for this process")
        settings = dataclasses.replace(settings, session_secret=secrets.token_urlsafe(32))
    metrics = GatewayMetrics()
    # Read at start-up, so a missing or unreadable word list stops the gateway here, not a request.
    sensitive_words = SensitiveWords.configured(settings.sensitive_words_file)
    app = web.Application(
        middlewares=[trace_middleware, metrics_middleware(metrics), error_middleware, auth_middleware],
        # JSON uploads carry base64 audio: 5 MB of audio is ~6.7 MB of text, plus the other fields.
        client_max_size=settings.upload_max_bytes * 4 // 3 + 64 * 1024,
    )
    setup_cors(app, settings.cors_origins)
    app.cleanup_ctx.append(_gateway_context(settings, metrics, sensitive_words))
    app.on_shutdown.append(_stop_streams)
    health.add_routes(app)
    session.add_routes(app)
    me.add_routes(app)
    voices.add_routes(app)
    syntheses.add_routes(app)
    stream_socket.add_routes(app)
    push.add_routes(app)
    docs.add_routes(app)
    demo.add_routes(app)
    return app


def _gateway_context(settings: Settings, metrics: GatewayMetrics, sensitive_words: SensitiveWords):
    async def context(app: web.Application) -> AsyncIterator[None]:
        # Each resource is entered right after it is made, so whatever start-up step fails, everything
        # made before it is closed again, in reverse order (the same order as a normal stop).
        async with contextlib.AsyncExitStack() as resources:
            executor = ThreadPoolExecutor(max_workers=AUDIO_THREADS, thread_name_prefix="audio")
            resources.push_async_callback(shutdown_executor, executor)
            bus = await EventBus.connect(settings.nats_urls, name="voicerelay-gateway")
            resources.push_async_callback(bus.close)
            http = await resources.enter_async_context(aiohttp.ClientSession())
            store = ObjectStore.from_settings(settings)
            resources.callback(store.close)
            # The VAD model loads here, so a missing model stops start-up and no upload waits for it.
            await asyncio.get_running_loop().run_in_executor(executor, vad.preload)
            await bus.ensure_topology(
                audit_max_age_s=settings.audit_max_age_s,
                output_max_age_s=settings.output_max_age_s,
                replicas=settings.nats_replicas,
            )
            await store.ensure_bucket()
            await store.ensure_lifecycle(
                expiry_rules(
                    sample_days=settings.sample_retention_days, output_days=settings.output_retention_days
                )
            )
            state = SharedState(bus)
            gateway = Gateway(
                settings=settings,
                bus=bus,
                state=state,
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
                tokens=SessionTokens(
                    settings.session_secret,
                    ttl_s=settings.session_ttl_s,
                    previous_secret=settings.session_secret_previous,
                ),
                revocations=SessionRevocationCheck(state.revoked_sessions),
                links=ResourceLinks(
                    settings.session_secret, previous_secret=settings.session_secret_previous
                ),
                vault=SessionKeyVault(
                    settings.session_secret, previous_secret=settings.session_secret_previous
                ),
                metrics=metrics,
                audio_executor=executor,
                decode_slots=Slots(DECODE_SLOTS),
                stream_slots=Slots(STREAMS_PER_GATEWAY),
                push_verifier=PushVerifier(
                    token=settings.wechat_push_token,
                    aes_key=settings.wechat_push_aes_key,
                    appid=settings.wechat_appid,
                ),
                sensitive_words=sensitive_words,
                queue=QueueGauge(bus),
                background=Supervisor("gateway"),
            )
            app[GATEWAY] = gateway
            await resources.enter_async_context(gateway.background)
            _start_background(gateway)
            log.info("gateway ready on %s", settings.public_base_url)
            yield
        log.info("gateway stopped")

    return context


def _start_background(gateway: Gateway) -> None:
    """The gateway's consumers and tasks; /readyz says unavailable as soon as one of them ends."""
    background = gateway.background
    # Dead letters first, so they stop last: what the main consumers give up on while stopping is
    # still handled.
    for name, loop in (
        (names.NOTIFIER_DEADLETTER_CONSUMER, notifier.dead_letter_consumer_of(gateway)),
        (names.REVIEW_DEADLETTER_CONSUMER, review.dead_letter_consumer_of(gateway)),
        (names.NOTIFIER_CONSUMER, notifier.consumer(gateway)),
        (names.REVIEW_CONSUMER, review.consumer(gateway)),
    ):
        background.start(name, loop.run, grace_s=CONSUMER_GRACE_S)
    sweeper = ReviewTimeoutSweeper.for_gateway(gateway)
    background.start(REVIEW_TIMEOUT_SWEEPER, sweeper.run, grace_s=sweeper.STOP_GRACE_S)
    background.start(STALE_TASK_SWEEPER, StaleTaskSweeper(gateway).run, grace_s=task_recovery.STOP_GRACE_S)


async def _stop_streams(app: web.Application) -> None:
    if GATEWAY in app:
        app[GATEWAY].stopping.set()
