"""Every subject, stream, consumer and KV bucket name. Nothing else spells them."""

from __future__ import annotations

from enum import StrEnum

STREAM = "TTS_EVENTS"
STREAM_SUBJECTS = ("tts.>",)


class EventType(StrEnum):
    """Event types double as subjects: `tts.<entity>.<event>` (CONTRACT §4)."""

    VOICE_UPLOADED = "tts.voice.uploaded"
    VOICE_REVIEWED = "tts.voice.reviewed"
    VOICE_DELETED = "tts.voice.deleted"
    SYNTHESIS_REQUESTED = "tts.synthesis.requested"
    SYNTHESIS_STARTED = "tts.synthesis.started"
    SYNTHESIS_COMPLETED = "tts.synthesis.completed"
    SYNTHESIS_FAILED = "tts.synthesis.failed"
    NOTIFY_SENT = "tts.notify.sent"
    NOTIFY_FAILED = "tts.notify.failed"


# Durable pull consumers that hand out work (explicit ack). Each names the subjects it takes.
WORKER_CONSUMER = "synth-worker"
WORKER_SUBJECTS = (EventType.SYNTHESIS_REQUESTED,)
NOTIFIER_CONSUMER = "notifier"
NOTIFIER_SUBJECTS = (EventType.SYNTHESIS_COMPLETED, EventType.SYNTHESIS_FAILED)
REVIEW_CONSUMER = "voice-review"
REVIEW_SUBJECTS = (EventType.VOICE_REVIEWED,)

# JetStream KV buckets: the shared state of every gateway and worker instance.
TASKS_BUCKET = "tts_tasks"  # key "<owner>.<task_id>" -> TaskRecord
VOICES_BUCKET = "tts_voices"  # key "<owner>.<voice_id>" -> VoiceRecord
MEDIA_CHECKS_BUCKET = "tts_media_checks"  # key "<wechat trace_id>" -> MediaCheckRecord
SESSIONS_BUCKET = "tts_sessions"  # key "<owner>" -> SessionRecord (session_key encrypted)
WECHAT_BUCKET = "tts_wechat"  # the shared access token, its refresh lock and last forced refresh
RATE_BUCKET = "tts_rate"  # key "<owner>.<window start>" -> request count; entries expire by themselves
