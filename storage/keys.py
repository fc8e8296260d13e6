"""Object keys. Every key starts with the owner, so no id can reach another user's objects."""

from __future__ import annotations

from common.owners import is_valid_owner

SAMPLES_PREFIX = "samples/"
OUTPUTS_PREFIX = "outputs/"
FEATURES_PREFIX = "features/"


def _owner(owner: str) -> str:
    if not is_valid_owner(owner):
        raise ValueError("owner is not a valid openid")
    return owner


def sample_key(owner: str, voice_id: str) -> str:
    """The normalised mono WAV of a voice (24 kHz; 16-24 kHz for uploads recorded lower)."""
    return f"{SAMPLES_PREFIX}{_owner(owner)}/{voice_id}.wav"


def output_key(owner: str, task_id: str, audio_format: str) -> str:
    """A task's audio; derived from the task id, so a redelivered job overwrites, never duplicates."""
    return f"{OUTPUTS_PREFIX}{_owner(owner)}/{task_id}.{audio_format}"


def features_prefix(owner: str, voice_id: str) -> str:
    """Where an engine may keep features computed from a voice's sample (speaker embeddings, prompt
    tokens); deleting the voice deletes everything under it."""
    return f"{FEATURES_PREFIX}{_owner(owner)}/{voice_id}/"


def owner_prefixes(owner: str) -> tuple[str, ...]:
    """Every prefix the owner's objects live under: erasing the user deletes them all."""
    return tuple(f"{prefix}{_owner(owner)}/" for prefix in (SAMPLES_PREFIX, FEATURES_PREFIX, OUTPUTS_PREFIX))


def expiry_rules(*, sample_days: int, output_days: int) -> dict[str, int]:
    """Days after which S3 itself removes objects, by key prefix.

    Features are derived from the sample, so they never outlive it.
    """
    return {SAMPLES_PREFIX: sample_days, FEATURES_PREFIX: sample_days, OUTPUTS_PREFIX: output_days}
