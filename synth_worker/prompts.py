"""Decoded voice samples kept in the worker's memory, so a voice's later tasks skip the S3 GET and the
decode of its sample.

An entry is keyed by the owner, the voice, the sample's object key and the sha256 of the sample's
bytes: the request event carries the voice's `audio_sha256` (events/task_events.py), so a job knows
the key before it reads anything, and a hit reads nothing. Samples never change under a key (a voice
id is never reused; a new recording is a new voice), and an entry only ever holds what was decoded
from bytes with that very sha256.

A deleted voice is forgotten (`forget_voice`, from the worker's deletion follower and the job's own
check) and stays forgotten: a job that decoded the sample just before the deletion cannot put it
back afterwards. Bounded by entries and by bytes, least recently used first out. Every method is
synchronous: on the one event loop, each runs without interleaving.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from common.audio import Pcm

DEFAULT_MAX_ENTRIES = 64  # voices
DEFAULT_MAX_BYTES = 128 * 1024 * 1024  # a 30 s sample at 48 kHz is 5.8 MB of float32; most are far less
# Deleted voices remembered, so that a late put of one is refused (voice ids are never reused).
_FORGOTTEN_KEPT = 4096
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: object) -> bool:
    """Whether `value` is a sha256 as the voice record holds it (64 lowercase hex digits)."""
    return isinstance(value, str) and _SHA256.match(value) is not None


@dataclass(frozen=True, slots=True)
class PromptKey:
    owner: str
    voice_id: str
    sample_key: str
    audio_sha256: str


class PromptCache:
    """Decoded samples by PromptKey; counts its hits and misses (tests and metrics read them).

    The Pcm handed out is shared by every task of the voice: engines read prompts, never write them.
    """

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[PromptKey, Pcm] = OrderedDict()
        self._bytes = 0
        self._forgotten: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def get(self, key: PromptKey) -> Pcm | None:
        prompt = self._entries.get(key)
        if prompt is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return prompt

    def put(self, key: PromptKey, prompt: Pcm) -> bool:
        """Keep `prompt` (decoded from bytes whose sha256 is `key.audio_sha256`); False when it is not
        kept: its voice was deleted, or it alone is larger than the cache."""
        size = prompt.samples.nbytes
        if (key.owner, key.voice_id) in self._forgotten or size > self._max_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.samples.nbytes
        self._entries[key] = prompt
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.samples.nbytes
        return True

    def forget_voice(self, owner: str, voice_id: str) -> int:
        """The voice was deleted: drop its samples now and refuse them from now on; how many went."""
        self._forgotten[(owner, voice_id)] = None
        self._forgotten.move_to_end((owner, voice_id))
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            self._forgotten.popitem(last=False)
        gone = [key for key in self._entries if (key.owner, key.voice_id) == (owner, voice_id)]
        for key in gone:
            self._bytes -= self._entries.pop(key).samples.nbytes
        return len(gone)

    def is_forgotten(self, owner: str, voice_id: str) -> bool:
        """Whether this process heard (or found) that the voice was deleted."""
        return (owner, voice_id) in self._forgotten

    def held_for(self, owner: str, voice_id: str) -> int:
        """How many samples of the voice are in memory now."""
        return sum(1 for key in self._entries if (key.owner, key.voice_id) == (owner, voice_id))
