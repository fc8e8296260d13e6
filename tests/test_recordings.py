"""ops.recordings: a pinned archive is checked, unpacked in memory, and failures say what happened.

The real downloads are exercised by tests/test_real_voices.py; these use local files only.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from common.audio import Pcm, decode_audio, encode_audio
from ops import recordings
from ops.recordings import Archive, RecordingsError, RecordingsUnavailable

RATE = 16_000


def clip(seconds: float, frequency: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return encode_audio(Pcm((0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), RATE), "wav")


def tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb(files: dict[str, bytes]) -> bytes:
    return b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + ar_member("data.tar.gz", tar_gz(files))


def archive_of(path: Path, data: bytes, members: tuple[str, ...], *, sha256: str | None = None) -> Archive:
    path.write_bytes(data)
    return Archive(
        speaker="someone",
        urls=(path.as_uri(),),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        members=members,
        about="a test archive",
    )


def test_a_debian_package_gives_one_wav_of_all_the_speakers_clips(tmp_path: Path) -> None:
    members = ("./usr/share/sounds/a.wav", "./usr/share/sounds/b.wav")
    package = deb({members[0]: clip(1.0, 220), members[1]: clip(0.5, 330), "./usr/share/doc/x": b"x"})
    archive = archive_of(tmp_path / "pkg.deb", package, members)
    cache = tmp_path / "cache"

    wav = recordings._speaker_wav(archive, recordings._fetch(archive, cache))
    pcm = decode_audio(wav)
    assert pcm.sample_rate_hz == RATE
    assert pcm.duration_s == pytest.approx(1.5 + recordings._GAP_S, abs=0.01)
    assert (cache / "pkg.deb").read_bytes() == package  # kept for the next run


def test_a_source_archive_member_is_found(tmp_path: Path) -> None:
    archive = archive_of(
        tmp_path / "src.tar.gz", tar_gz({"pkg/data/a.wav": clip(0.4, 200)}), ("pkg/data/a.wav",)
    )
    assert (
        decode_audio(recordings._speaker_wav(archive, recordings._fetch(archive, tmp_path))).duration_s > 0.3
    )


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    archive = archive_of(
        tmp_path / "src.tar.gz", tar_gz({"a.wav": clip(0.4, 200)}), ("a.wav",), sha256="0" * 64
    )
    with pytest.raises(RecordingsError, match="not the pinned"):
        recordings._fetch(archive, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_cached_copy_that_no_longer_matches_is_fetched_again(tmp_path: Path) -> None:
    data = tar_gz({"a.wav": clip(0.4, 200)})
    archive = archive_of(tmp_path / "src.tar.gz", data, ("a.wav",))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "src.tar.gz").write_bytes(b"damaged")
    assert recordings._fetch(archive, cache) == data


def test_a_missing_member_or_a_broken_package_says_so(tmp_path: Path) -> None:
    archive = archive_of(tmp_path / "src.tar.gz", tar_gz({"a.wav": clip(0.4, 200)}), ("b.wav",))
    with pytest.raises(RecordingsError, match=r"lacks b\.wav"):
        recordings._speaker_wav(archive, recordings._fetch(archive, tmp_path))
    with pytest.raises(RecordingsError, match="no ar signature"):
        list(recordings._deb_data_files(b"PK\x03\x04"))
    with pytest.raises(RecordingsError, match=r"no data\.tar"):
        list(recordings._deb_data_files(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n")))


def test_an_unreachable_registry_is_unavailable_not_an_error(tmp_path: Path) -> None:
    """What tests skip on: every URL tried, each failure in the message."""
    archive = Archive(
        "someone", ("http://127.0.0.1:9/a.deb", (tmp_path / "gone.deb").as_uri()), "0" * 64, (), "x"
    )
    with pytest.raises(RecordingsUnavailable, match=r"127\.0\.0\.1:9.*gone\.deb"):
        recordings._fetch(archive, tmp_path)


def test_the_pins_name_two_speakers_with_their_clips() -> None:
    assert [archive.speaker for archive in recordings.ARCHIVES] == ["arctic", "alsa"]
    for archive in recordings.ARCHIVES:
        assert len(archive.sha256) == 64 and archive.members and archive.urls
