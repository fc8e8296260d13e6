"""Object keys. Every key starts with the owner, so no id can reach another user's objects."""

from __future__ import annotations

from events.records import is_valid_owner

SAMPLES_PREFIX = "samples/"
OUTPUTS_PREFIX = "outputs/"


def _owner(owner: str) -> str:
    if not is_valid_owner(owner):
        raise ValueError("owner is not a valid openid")
    return owner


def sample_key(owner: str, voice_id: str) -> str:
    """The normalised 16 kHz mono WAV of a voice."""
    return f"{SAMPLES_PREFIX}{_owner(owner)}/{voice_id}.wav"


def output_key(owner: str, task_id: str, audio_format: str) -> str:
    """A task's audio; derived from the task id, so a redelivered job overwrites, never duplicates."""
    return f"{OUTPUTS_PREFIX}{_owner(owner)}/{task_id}.{audio_format}"
