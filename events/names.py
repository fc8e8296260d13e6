"""Every subject, stream, consumer and KV bucket name. Nothing else spells them."""

from __future__ import annotations

from enum import StrEnum

STREAM = "TTS_EVENTS"
STREAM_SUBJECTS = ("tts.>",)


class EventType(StrEnum):
    """Event types double as subjects: `tts.<entity>.<event>`, all captured by STREAM (`tts.>`)."""

    VOICE_UPLOADED = "tts.voice.uploaded"
    VOICE_REVIEWED = "tts.voice.reviewed"
    VOICE_DELETED = "tts.voice.deleted"
    SYNTHESIS_REQUESTED = "tts.synthesis.requested"
    SYNTHESIS_STARTED = "tts.synthesis.started"
    SYNTHESIS_COMPLETED = "tts.synthesis.completed"
    SYNTHESIS_FAILED = "tts.synthesis.failed"
    # A job JetStream gave up on (max_deliver reached) without a worker failing it: the task is failed
    # and this event keeps the original event id, for operators.
    SYNTHESIS_DEADLETTERED = "tts.synthesis.deadlettered"
    # An operator ran a failed task again (`python -m ops replay --redrive`); its request follows.
    SYNTHESIS_REDRIVEN = "tts.synthesis.redriven"
    NOTIFY_SENT = "tts.notify.sent"
    NOTIFY_FAILED = "tts.notify.failed"
    # A user erased everything of theirs (DELETE /v1/me): their key is destroyed, so the texts sealed
    # in their earlier events can no longer be read (events/sealing.py).
    USER_ERASED = "tts.user.erased"


# Audio of running jobs for streaming clients (events/audio.py): a stream of its own, in memory and
# short-lived, outside the audit stream. `audio.<owner>.<task_id>.<attempt>`.
AUDIO_STREAM = "TTS_AUDIO"
AUDIO_STREAM_SUBJECTS = ("audio.>",)


def audio_subject(owner: str, task_id: str, attempt: int) -> str:
    """Where attempt `attempt` (the job's delivery number) of a task publishes its audio chunks."""
    return f"audio.{owner}.{task_id}.{attempt}"


def audio_subjects(owner: str, task_id: str) -> str:
    """Every attempt's chunks of a task (`task_id` "*": of every task of the owner)."""
    return f"audio.{owner}.{task_id}.*"


# Durable pull consumers that hand out work (explicit ack). Each names the subjects it takes.
WORKER_CONSUMER = "synth-worker"
WORKER_SUBJECTS = (EventType.SYNTHESIS_REQUESTED,)
NOTIFIER_CONSUMER = "notifier"
NOTIFIER_SUBJECTS = (EventType.SYNTHESIS_COMPLETED, EventType.SYNTHESIS_FAILED)
REVIEW_CONSUMER = "voice-review"
REVIEW_SUBJECTS = (EventType.VOICE_REVIEWED,)

# Not a work consumer: every worker runs its own ordered consumer of deletions (ephemeral, from the
# events after it starts), because each must forget what it keeps in memory of a deleted voice. The
# name is the supervised work's, for logs; the server names the consumer itself.
WORKER_ERASURE_FOLLOWER = "synth-worker-erasure"
WORKER_ERASURE_SUBJECT = EventType.VOICE_DELETED


def max_deliveries_subject(stream: str, consumer: str = "*") -> str:
    """The advisory JetStream publishes when `consumer` stops redelivering a message (max_deliver)."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


# Dead letters: a job that ran out of deliveries without a worker failing it (killed on its last try).
# JetStream announces it only once, as a core-NATS advisory; a second stream keeps those advisories, so
# one is handled (and retried) by a worker even if the process that saw it first dies.
DEADLETTER_STREAM = "TTS_DEADLETTER"
DEADLETTER_STREAM_SUBJECTS = (max_deliveries_subject(STREAM),)
WORKER_DEADLETTER_CONSUMER = "synth-worker-deadletter"
WORKER_DEADLETTER_SUBJECTS = (max_deliveries_subject(STREAM, WORKER_CONSUMER),)
# The gateway's consumers dead-letter too: a verdict or a notification is never dropped in silence.
REVIEW_DEADLETTER_CONSUMER = "voice-review-deadletter"
REVIEW_DEADLETTER_SUBJECTS = (max_deliveries_subject(STREAM, REVIEW_CONSUMER),)
NOTIFIER_DEADLETTER_CONSUMER = "notifier-deadletter"
NOTIFIER_DEADLETTER_SUBJECTS = (max_deliveries_subject(STREAM, NOTIFIER_CONSUMER),)

# JetStream KV buckets: the shared state of every gateway and worker instance.
TASKS_BUCKET = "tts_tasks"  # key "<owner>.<task_id>" -> TaskRecord
VOICES_BUCKET = "tts_voices"  # key "<owner>.<voice_id>" -> VoiceRecord
MEDIA_CHECKS_BUCKET = "tts_media_checks"  # key "<wechat trace_id>" -> MediaCheckRecord
SESSIONS_BUCKET = "tts_sessions"  # key "<owner>" -> SessionRecord (session_key encrypted)
WECHAT_BUCKET = "tts_wechat"  # the shared access token, its refresh lock and last forced refresh
RATE_BUCKET = "tts_rate"  # key "<owner>.<window start>" -> request count; entries expire by themselves
# key "<owner>.<sha256 of the Idempotency-Key>" -> IdempotencyClaim; a day, as clients retry within it
IDEMPOTENCY_BUCKET = "tts_idempotency"
# key "<owner>.<voice_id>.<request hash>" -> CachedResult; the voice in the key lets its deletion find them
RESULTS_BUCKET = "tts_cache"
# key "<owner>.<lease id>" -> StreamLease: a long-lived response (SSE, audio stream, WebSocket) open now
STREAMS_BUCKET = "tts_streams"
# key "<sha256 of timestamp, nonce and signature>" -> b"": a WeChat push already received; kept for
# the push's staleness window, so the same push delivered again is refused (views/push.py)
PUSH_NONCES_BUCKET = "tts_push_nonces"
# key "<owner>" -> the user's sealing key (events/sealing.py): their texts in events are sealed with
# it, and erasure destroys it. Kept as long as the audit stream keeps events, renewed while in use.
USER_KEYS_BUCKET = "tts_user_keys"
# key "<owner>.<session id>" -> b"": a revoked bearer token; key "<owner>" -> ms since the epoch:
# every token of the owner issued until then is revoked (wechat_adapter/auth.py)
REVOKED_SESSIONS_BUCKET = "tts_revoked_sessions"
