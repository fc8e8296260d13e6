"""Prometheus metrics of the gateway, on a registry per app (no process-global collectors)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_seconds = Histogram(
            "voicerelay_http_request_seconds",
            "HTTP request latency by route and status",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.tasks_submitted = Counter(
            "voicerelay_tasks_submitted_total",
            "Synthesis tasks accepted, by initial status",
            ["status"],
            registry=self.registry,
        )
        self.wechat_calls = Counter(
            "voicerelay_wechat_calls_total",
            "WeChat API calls by API and what the caller made of the answer (ok, fail_open, …)",
            ["api", "outcome"],
            registry=self.registry,
        )
        self.wechat_requests = Counter(
            "voicerelay_wechat_requests_total",
            'WeChat HTTP requests by API and errcode ("0" success, "unavailable" network/5xx)',
            ["api", "errcode"],
            registry=self.registry,
        )
        self.queue_pending = Gauge(
            "voicerelay_queue_pending",
            "Synthesis jobs published and not yet handed to a worker (read when scraped)",
            registry=self.registry,
        )
        self.notifications = Counter(
            "voicerelay_notifications_total",
            "Subscription messages by outcome",
            ["outcome"],
            registry=self.registry,
        )

    def wechat_observer(self, api: str, errcode: str) -> None:
        """Passed to WeChatClient(observer=…): called once per HTTP request it makes."""
        self.wechat_requests.labels(api, errcode).inc()

    async def render(self, queue_pending: Callable[[], Awaitable[int]]) -> bytes:
        """The exposition text, with the gauges that must be read from NATS refreshed first."""
        # NATS away: the last value stays, and /readyz says why.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            self.queue_pending.set(await queue_pending())
        return generate_latest(self.registry)
