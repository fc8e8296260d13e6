"""Shared-state records kept in JetStream KV: what a task and a voice are right now."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class TaskStatus(StrEnum):
    QUEUED = "queued"
    AWAITING_REVIEW = "awaiting_review"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_TASK_STATUSES


_FINAL_TASK_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.REJECTED})


class VoiceStatus(StrEnum):
    PENDING_REVIEW = "pending_review"
    READY = "ready"
    REJECTED = "rejected"


class ErrorInfo(msgspec.Struct, frozen=True):
    """A stable snake_case code and a zh-CN message fit for a toast: a failed task's `error` in the API
    (/openapi.json)."""

    code: str
    message: str


# Why a task failed because its voice went away: the gateway (a deleted voice's waiting tasks) and
# the workers (a job whose sample is gone) say it the same way.
VOICE_DELETED = ErrorInfo("voice_deleted", "声音已被删除，无法合成")


class TaskRecord(msgspec.Struct, kw_only=True):
    task_id: str
    owner: str
    status: TaskStatus
    text: str
    voice_id: str
    mode: str
    format: str
    speed: float = 1.0
    instruct: str | None = None
    notify: bool = False
    trace_id: str
    created_at: str
    updated_at: str
    audio_key: str | None = None
    duration_s: float | None = None
    error: ErrorInfo | None = None
    # How often an operator re-drove it. Part of its event ids, so the events of a new run are not
    # dropped by the stream's duplicate window as repeats of the last run's.
    redrives: int = 0
    # The audible AIGC label its audio carries (common.vocabulary.AIGC_LABELS), set when the worker
    # stores the audio (or copied from the task a cached result came from). None: tasks from before.
    aigc_label: str | None = None


class VoiceRecord(msgspec.Struct, kw_only=True):
    voice_id: str
    owner: str
    name: str
    status: VoiceStatus
    duration_s: float
    prompt_text: str
    created_at: str
    sample_key: str
    audio_sha256: str
    media_trace_id: str | None = None
    review_label: str | None = None
    # The speaker's consent given at enrolment (《深度合成管理规定》第十四条): "self" (the uploader is
    # the speaker) or "authorized" (the speaker gave separate consent), and when it was given (ISO
    # time). Voices stored before consent was asked decode as "unrecorded" with an empty consent_at.
    consent: str = "unrecorded"
    consent_at: str = ""


class MediaCheckRecord(msgspec.Struct, kw_only=True):
    """WeChat's mediaCheckAsync trace_id -> the voice it judges; stored before the call returns."""

    trace_id: str
    owner: str
    voice_id: str
    created_at: str


class SessionRecord(msgspec.Struct, kw_only=True):
    """What code2session gave us for a user; `session_key` only ever stored encrypted."""

    owner: str
    session_key_encrypted: str
    unionid: str | None = None
    updated_at: str


class IdempotencyClaim(msgspec.Struct, kw_only=True):
    """The first request under an `Idempotency-Key`: what it asked and the task id it owns.

    The task id is chosen when the key is claimed, so a retry can find the task by it as soon as
    the task exists, and a claim whose task never appeared can be taken over under the same id.
    """

    fingerprint: str  # a hash of the request's normalised fields
    task_id: str
    claimed_at_s: float  # epoch seconds, renewed by a takeover


class CachedResult(msgspec.Struct, kw_only=True):
    """The task whose audio answers every identical request (see SharedState.results)."""

    task_id: str
    engine: str  # "<engine>/<version>" the key was computed with
    created_at: str


class StreamLease(msgspec.Struct, kw_only=True):
    """One long-lived response a user holds open (see SharedState.streams)."""

    opened_at: str
    renewed_at: str


class AccessTokenRecord(msgspec.Struct, kw_only=True):
    """WeChat's access token as every gateway instance shares it."""

    value: str
    expires_at_s: float  # epoch seconds, as WeChat's expires_in says
    fetched_at_s: float
    # The last force_refresh by any instance: WeChat allows one per 30 s and 20 a day.
    last_forced_at_s: float = 0.0
