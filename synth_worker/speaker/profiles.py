"""What an analysis made of a voice's sample, computed once per voice and kept for every later task.

A profile is opaque bytes from a blocking, deterministic analysis (an engine's `analyse_speaker`, the
speaker encoder's embedding). It lives in S3 under the voice's features prefix, so deleting the voice
deletes it and the lifecycle rule expires it with the sample, and in a bounded in-process LRU in front
of S3. The key holds the owner, the sample's sha256, the analysis and its version: two users with the
same recording never share a profile, and a new analysis method never reads an old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

from common.audio import Pcm
from storage.keys import features_prefix
from storage.objects import ObjectNotFound, ObjectStore, StorageError

log = logging.getLogger(__name__)

ProfileSource = Literal["memory", "stored", "computed"]
DEFAULT_CAPACITY = 256  # profiles kept in memory per process (espeak: 80-360 KB each, so under 100 MB)
_NAME_PART_MAX_CHARS = 64
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ProfileKey:
    """Which analysis of which owner's sample; `object_key` is where it is stored."""

    owner: str
    voice_id: str
    audio_sha256: str
    analysis: str  # the engine's name, or the encoder's
    version: str  # the analysis method's version (SpeakerAdaptive.profile_version)

    def __post_init__(self) -> None:
        if not _SHA256.match(self.audio_sha256):
            raise ValueError("audio_sha256 must be 64 lowercase hex digits")
        for part in (self.analysis, self.version):
            if not 0 < len(part) <= _NAME_PART_MAX_CHARS:
                raise ValueError(f"{part!r} cannot be part of a profile key")

    @property
    def object_key(self) -> str:
        # features_prefix validates the owner; the voice id places it where DELETE voice looks.
        # Quoted, so that each part is one path segment (a version may be "espeak-ng-1.52.0/knn-1").
        analysis, version = (urllib.parse.quote(part, safe="-_.") for part in (self.analysis, self.version))
        return (
            f"{features_prefix(self.owner, self.voice_id)}profiles/{analysis}/{version}/{self.audio_sha256}"
        )


@dataclass(frozen=True, slots=True)
class Profile:
    data: bytes
    source: ProfileSource
    analysis_s: float | None = None  # seconds the analysis took, when it ran for this lookup


class ProfileCache:
    """Profiles by key: from memory, else from S3, else analysed in `executor` and stored.

    Concurrent lookups of one key in one process analyse once: the others wait and take it from memory.
    S3 is a cache here: a failed read means analysing again, a failed write is logged, neither fails
    the lookup. Only the analysis itself may raise.
    """

    def __init__(self, store: ObjectStore, executor: Executor, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._store, self._executor, self._capacity = store, executor, capacity
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # key -> lock, lookups holding or waiting

    async def get_or_analyse(self, key: ProfileKey, prompt: Pcm, analyse: Callable[[Pcm], bytes]) -> Profile:
        """The profile of `key`; `analyse(prompt)` (blocking) runs only if neither memory nor S3 has it."""
        name = key.object_key
        if (data := self._recall(name)) is not None:
            return Profile(data, "memory")
        async with self._exclusive(name):
            if (data := self._recall(name)) is not None:  # analysed while this lookup waited
                return Profile(data, "memory")
            if (data := await self._read(name)) is not None:
                self._remember(name, data)
                return Profile(data, "stored")
            started = time.perf_counter()
            data = await asyncio.get_running_loop().run_in_executor(self._executor, analyse, prompt)
            analysis_s = time.perf_counter() - started
            self._remember(name, data)
            await self._write(name, data)
            log.info("analysed %s in %.2f s (%d bytes)", name, analysis_s, len(data))
            return Profile(data, "computed", analysis_s)

    async def discard(self, key: ProfileKey) -> None:
        """Drop a profile the engine refused, from memory and S3, so the next lookup analyses afresh."""
        self._memory.pop(key.object_key, None)
        try:
            await self._store.delete(key.object_key)
        except StorageError as exc:  # the fresh profile overwrites it anyway
            log.warning("refused profile %s not deleted: %s", key.object_key, exc)

    def forget_all(self) -> None:
        """Drop every profile held in memory (S3 keeps them)."""
        self._memory.clear()

    def forget_voice(self, owner: str, voice_id: str) -> int:
        """Drop the voice's profiles from memory (the voice was deleted); how many there were.

        S3 is left alone: deleting the voice deletes its features prefix.
        """
        prefix = features_prefix(owner, voice_id)
        gone = [name for name in self._memory if name.startswith(prefix)]
        for name in gone:
            del self._memory[name]
        return len(gone)

    def held_for(self, owner: str, voice_id: str) -> int:
        """How many of the voice's profiles are in memory now."""
        prefix = features_prefix(owner, voice_id)
        return sum(1 for name in self._memory if name.startswith(prefix))

    def _recall(self, name: str) -> bytes | None:
        data = self._memory.get(name)
        if data is not None:
            self._memory.move_to_end(name)
        return data

    def _remember(self, name: str, data: bytes) -> None:
        self._memory[name] = data
        self._memory.move_to_end(name)
        while len(self._memory) > self._capacity:
            self._memory.popitem(last=False)

    async def _read(self, name: str) -> bytes | None:
        try:
            return await self._store.get(name)
        except ObjectNotFound:
            return None
        except StorageError as exc:
            log.warning("profile %s not read, analysing instead: %s", name, exc)
            return None

    async def _write(self, name: str, data: bytes) -> None:
        try:
            await self._store.put(name, data, "application/octet-stream")
        except StorageError as exc:
            # This process keeps it in memory; another process analyses again. Nothing is lost.
            log.warning("profile %s not stored: %s", name, exc)

    @contextlib.asynccontextmanager
    async def _exclusive(self, name: str) -> AsyncIterator[None]:
        """One lookup at a time per key; the lock is dropped when nobody holds or waits for it."""
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)
