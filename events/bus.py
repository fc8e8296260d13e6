"""The NATS connection and the JetStream topology: one stream as the audit log, work consumers, KV."""

from __future__ import annotations

import dataclasses
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
from events.audio import audio_stream_config
from events.envelope import Envelope

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    name: str
    subjects: tuple[str, ...]
    ack_wait_s: float
    max_deliver: int
    max_ack_pending: int
    stream: str = names.STREAM


CONSUMERS = (
    # Workers send in_progress() every ack_wait/3 (synth_worker/jobs.py), so a long synthesis stays
    # theirs while a killed worker's job goes to another within 15 s. Ten deliveries, with transient
    # failures retried after 1, 2, 4, 8, 8, … s, ride out about a minute of S3 or engine trouble.
    ConsumerSpec(names.WORKER_CONSUMER, tuple(names.WORKER_SUBJECTS), 15.0, 10, 1000),
    ConsumerSpec(names.NOTIFIER_CONSUMER, tuple(names.NOTIFIER_SUBJECTS), 30.0, 10, 1000),
    ConsumerSpec(names.REVIEW_CONSUMER, tuple(names.REVIEW_SUBJECTS), 30.0, 10, 1000),
)
# On the dead-letter stream (kept apart: every one of CONSUMERS is on the event stream).
DEADLETTER_CONSUMERS = tuple(
    ConsumerSpec(name, tuple(subjects), 30.0, 20, 1000, stream=names.DEADLETTER_STREAM)
    for name, subjects in (
        (names.WORKER_DEADLETTER_CONSUMER, names.WORKER_DEADLETTER_SUBJECTS),
        (names.REVIEW_DEADLETTER_CONSUMER, names.REVIEW_DEADLETTER_SUBJECTS),
        (names.NOTIFIER_DEADLETTER_CONSUMER, names.NOTIFIER_DEADLETTER_SUBJECTS),
    )
)


def consumer_spec(name: str) -> ConsumerSpec:
    """The settings a durable consumer is created with (handlers need max_deliver to know a last try)."""
    return next(spec for spec in (*CONSUMERS, *DEADLETTER_CONSUMERS) if spec.name == name)


# bucket -> how long its entries live (None: until deleted). Three follow the deployment's retention
# settings instead (`retention_ttls`); the values here are their defaults.
KV_BUCKETS: dict[str, float | None] = {
    # A task outlives its audio by nothing: OUTPUT_RETENTION_DAYS after its last change it is gone.
    names.TASKS_BUCKET: 7 * 24 * 3600.0,
    names.VOICES_BUCKET: None,
    names.MEDIA_CHECKS_BUCKET: 24 * 3600.0,  # WeChat answers within 30 minutes
    names.SESSIONS_BUCKET: None,
    names.RATE_BUCKET: 2 * 3600.0 + 60,  # two of the longest window (uploads per hour)
    names.WECHAT_BUCKET: 3 * 3600.0,  # access tokens live two hours
    names.IDEMPOTENCY_BUCKET: 24 * 3600.0,  # how long a client may retry with the same key
    # The default output retention: an entry that outlives its audio is only a miss, never an error.
    names.RESULTS_BUCKET: 7 * 24 * 3600.0,
    # Renewed while the stream is open (wechat_adapter.streams.LEASE_RENEW_S): a gateway that dies
    # without closing its streams frees their leases within a minute.
    names.STREAMS_BUCKET: 60.0,
    # Twice the push staleness window (push_security.MAX_CLOCK_SKEW_S, 300 s): a push is accepted while
    # its timestamp is within the skew of now, so its nonce must be remembered at least that long.
    names.PUSH_NONCES_BUCKET: 600.0,
    # The longest a bearer token lives (Settings.session_ttl_s, 7 days), and an hour: a revocation
    # outlives the token it revokes. The gateway refuses to start with a longer token TTL.
    names.REVOKED_SESSIONS_BUCKET: 7 * 24 * 3600.0 + 3600,
    # A day longer than the audit stream keeps events (AUDIT_MAX_AGE_S, 30 days by default), renewed
    # while the key is used: an event in the stream can always be opened until its user is erased.
    names.USER_KEYS_BUCKET: 31 * 24 * 3600.0,
}

# How much longer a user's key lives than the oldest event it sealed (see `retention_ttls`).
USER_KEY_SLACK_S = 24 * 3600.0


def retention_ttls(*, audit_max_age_s: float, output_max_age_s: float) -> dict[str, float | None]:
    """KV_BUCKETS with the TTLs that follow the deployment's retention: tasks and cached results live
    as long as the outputs they point to, user keys as long as the events they sealed."""
    return {
        **KV_BUCKETS,
        names.TASKS_BUCKET: output_max_age_s,
        names.RESULTS_BUCKET: output_max_age_s,
        names.USER_KEYS_BUCKET: audit_max_age_s + USER_KEY_SLACK_S,
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

    async def ensure_topology(
        self, *, audit_max_age_s: float, output_max_age_s: float, replicas: int | None = None
    ) -> None:
        """Create or update the streams, consumers and KV buckets; safe to run from every process.

        `audit_max_age_s` and `output_max_age_s` (AUDIT_MAX_AGE_S, OUTPUT_RETENTION_DAYS) set how long
        events, tasks, cached results and user keys live: required, because a process that left one
        out would bring the deployment's buckets back to a default (every process passes its Settings').

        `replicas` (3 on a three-node cluster) is applied to every stream, consumer and new bucket.
        None follows the event stream as it exists (1 for a new deployment), so a process started
        without it never scales a replicated deployment down.
        """
        if replicas is None:
            replicas = await self._stream_replicas(names.STREAM) or 1
        await self._ensure_stream(
            StreamConfig(
                name=names.STREAM,
                subjects=list(names.STREAM_SUBJECTS),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=audit_max_age_s,
                num_replicas=replicas,
                duplicate_window=120.0,
            )
        )
        # A dead letter points into the event stream, so it is worth keeping as long as the event is.
        await self._ensure_stream(
            StreamConfig(
                name=names.DEADLETTER_STREAM,
                subjects=list(names.DEADLETTER_STREAM_SUBJECTS),
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=audit_max_age_s,
                num_replicas=replicas,
            )
        )
        await self._ensure_stream(audio_stream_config(replicas))
        for spec in (*CONSUMERS, *DEADLETTER_CONSUMERS):
            # A durable create without an action is create-or-update (nats-server >= 2.10): changed
            # settings such as ack_wait or max_deliver apply to the existing consumer, which keeps its
            # place and pending messages. A change the server cannot apply raises here, at start-up.
            await self.js.add_consumer(
                spec.stream,
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
        ttls = retention_ttls(audit_max_age_s=audit_max_age_s, output_max_age_s=output_max_age_s)
        for bucket, ttl_s in ttls.items():
            try:
                self._kv[bucket] = await self.js.key_value(bucket)
                await self._ensure_bucket_ttl(bucket, ttl_s)
            except BucketNotFoundError:
                self._kv[bucket] = await self.js.create_key_value(
                    KeyValueConfig(
                        bucket=bucket, history=5, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE
                    )
                )
        log.info(
            "jetstream topology ready: stream %s, %d consumers, %d replica(s)",
            names.STREAM,
            len(CONSUMERS) + len(DEADLETTER_CONSUMERS),
            replicas,
        )

    async def _ensure_bucket_ttl(self, bucket: str, ttl_s: float | None) -> None:
        """A bucket made by an older release keeps its TTL unless told: bring it to today's."""
        info = await self.js.stream_info(f"KV_{bucket}")
        wanted = ttl_s or 0.0
        if abs((info.config.max_age or 0.0) - wanted) > 0.5:
            await self.js.update_stream(dataclasses.replace(info.config, max_age=wanted))
            log.info("KV bucket %s: entries now live %.0f s", bucket, wanted)

    async def _stream_replicas(self, stream: str) -> int | None:
        try:
            return (await self.js.stream_info(stream)).config.num_replicas
        except NotFoundError:
            return None

    async def _ensure_stream(self, config: StreamConfig) -> None:
        assert config.name is not None
        try:
            await self.js.stream_info(config.name)
        except NotFoundError:
            await self.js.add_stream(config)
        else:
            await self.js.update_stream(config)

    def kv(self, bucket: str) -> KeyValue:
        return self._kv[bucket]

    async def purge_kv(self, bucket: str, pattern: str) -> None:
        """Remove every key matching a subject pattern (`owner`, `owner.*`, `*.owner.>`) from a bucket,
        with its history and without the delete markers a KV purge leaves: afterwards the bucket's
        stream holds no trace of those keys (erasure). A watcher of such a key is not told."""
        await self.js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{pattern}")

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
        return await self.js.pull_subscribe_bind(durable=consumer, stream=consumer_spec(consumer).stream)

    async def follow_subscription(self, subject: str) -> JetStreamContext.PushSubscription:
        """This process's own ordered consumer of `subject` on the event stream, from the next event
        on: unlike a work consumer's, every process that follows sees every event. No acks; the
        server drops the consumer once its subscriber is gone. Read it with `next_msg`."""
        return await self.js.subscribe(
            subject,
            stream=names.STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )

    @property
    def is_connected(self) -> bool:
        return self.nc.is_connected

    async def close(self) -> None:
        """Flush what was published, stop subscriptions, close."""
        if not self.nc.is_closed:
            await self.nc.drain()
