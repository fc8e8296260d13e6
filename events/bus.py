"""The NATS connection and the JetStream topology: one stream as the audit log, work consumers, KV."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from events import names
from events.envelope import Envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    name: str
    subjects: tuple[str, ...]
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int


CONSUMERS = (
    # Synthesis can take a while on CPU; workers heartbeat with in_progress() on long jobs.
    ConsumerSpec(names.WORKER_CONSUMER, tuple(names.WORKER_SUBJECTS), 60.0, 5, 1000),
    ConsumerSpec(names.NOTIFIER_CONSUMER, tuple(names.NOTIFIER_SUBJECTS), 30.0, 10, 1000),
    ConsumerSpec(names.REVIEW_CONSUMER, tuple(names.REVIEW_SUBJECTS), 30.0, 10, 1000),
)


def consumer_spec(name: str) -> ConsumerSpec:
    """The settings a durable consumer is created with (handlers need max_deliver to know a last try)."""
    return next(spec for spec in CONSUMERS if spec.name == name)


# bucket -> how long its entries live (None: until deleted)
KV_BUCKETS: dict[str, float | None] = {
    names.TASKS_BUCKET: None,
    names.VOICES_BUCKET: None,
    names.MEDIA_CHECKS_BUCKET: 24 * 3600.0,  # WeChat answers within 30 minutes
    names.SESSIONS_BUCKET: None,
    names.RATE_BUCKET: 180.0,  # a few one-minute windows
    names.WECHAT_BUCKET: 3 * 3600.0,  # access tokens live two hours
}


class EventBus:
    """Owns one NATS connection. `connect()` then `ensure_topology()`; `close()` drains."""

    def __init__(self, nc: NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js
        self._kv: dict[str, KeyValue] = {}

    @classmethod
    async def connect(cls, urls: Sequence[str], *, name: str, connect_timeout_s: float = 5.0) -> EventBus:
        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            if not (nc.is_closed or nc.is_draining):  # an intended close is not news
                log.warning("nats: disconnected")

        async def on_reconnect() -> None:
            log.info("nats: reconnected to %s", nc.connected_url)

        nc = await nats.connect(
            servers=list(urls),
            name=name,
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        return cls(nc, nc.jetstream())

    async def ensure_topology(self, *, audit_max_age_s: float, replicas: int = 1) -> None:
        """Create or update the stream, consumers and KV buckets; safe to run from every process."""
        stream = StreamConfig(
            name=names.STREAM,
            subjects=list(names.STREAM_SUBJECTS),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=audit_max_age_s,
            num_replicas=replicas,
            duplicate_window=120.0,
        )
        try:
            await self.js.stream_info(names.STREAM)
            await self.js.update_stream(stream)
        except NotFoundError:
            await self.js.add_stream(stream)
        for spec in CONSUMERS:
            await self.js.add_consumer(
                names.STREAM,
                ConsumerConfig(
                    durable_name=spec.name,
                    filter_subjects=list(spec.subjects),
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.NEW,
                    ack_wait=spec.ack_wait_s,
                    max_deliver=spec.max_deliver,
                    max_ack_pending=spec.max_ack_pending,
                    num_replicas=replicas,
                ),
            )
        for bucket, ttl_s in KV_BUCKETS.items():
            try:
                self._kv[bucket] = await self.js.key_value(bucket)
            except BucketNotFoundError:
                self._kv[bucket] = await self.js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket, history=5, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE
                    )
                )
        log.info("jetstream topology ready: stream %s, %d consumers", names.STREAM, len(CONSUMERS))

    def kv(self, bucket: str) -> KeyValue:
        return self._kv[bucket]

    async def publish(self, event: Envelope) -> int:
        """Publish to the stream; the event id is the Nats-Msg-Id, so a retried publish dedupes."""
        ack = await self.js.publish(
            event.subject,
            event.to_json(),
            stream=names.STREAM,
            headers={"Nats-Msg-Id": event.id, "Trace-Id": event.trace_id},
        )
        return ack.seq

    async def pull_subscription(self, consumer: str) -> JetStreamContext.PullSubscription:
        """Bind to a durable consumer created by `ensure_topology`."""
        return await self.js.pull_subscribe_bind(durable=consumer, stream=names.STREAM)

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    async def close(self) -> None:
        """Flush what was published, stop subscriptions, close."""
        if not self.nc.is_closed:
            await self.nc.drain()
