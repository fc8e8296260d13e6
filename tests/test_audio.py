"""common.audio: uploads in every container a phone or browser records, rejections, and our encodings."""

from __future__ import annotations

import functools
import io
import struct

import av
import numpy as np
import pytest

from common.audio import (
    CONTENT_TYPES,
    AudioDecodeError,
    AudioError,
    Pcm,
    decode_audio,
    encode_audio,
    read_metadata,
    rms_dbfs,
    to_wav_16k_mono,
)

DURATION_S = 2.0
# GB 45438-2025 Annex E, as synth_worker/labels.py writes it (non-ASCII kept, as from ensure_ascii=False).
AIGC_LABEL = (
    '{"Label":"1","ContentProducer":"语音中继","ProduceID":"t_01","ReservedCode1":"",'
    '"ContentPropagator":"","PropagateID":"","ReservedCode2":""}'
)


def speechlike(duration_s: float, rate_hz: int, channels: int = 1) -> np.ndarray:
    """A voiced-sounding test signal: 140 Hz with harmonics, a slow envelope, a little noise."""
    t = np.arange(round(duration_s * rate_hz)) / rate_hz
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    noise = np.random.default_rng(7).normal(0, 0.01, (channels, t.size))
    return (0.3 * voiced * envelope + noise).astype(np.float32)


def pyav_encode(
    samples: np.ndarray,
    rate_hz: int,
    container: str,
    codec: str,
    *,
    stream_rate_hz: int | None = None,
    bit_rate_bps: int | None = None,
) -> bytes:
    """Encode (channels, n) float samples with PyAV directly, the way a recorder app would."""
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=stream_rate_hz or rate_hz, layout=layout)
        if bit_rate_bps:
            stream.bit_rate = bit_rate_bps
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate_hz
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


def video_only_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def png_image() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def id3_size(mp3: bytes) -> int:
    assert mp3[:3] == b"ID3"
    return 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(mp3[6:10]))


def wav_header_claiming(data_bytes: int, rate_hz: int = 16_000) -> bytes:
    """A 16-bit mono WAV header whose sizes claim `data_bytes` of samples."""
    fmt = struct.pack("<HHIIHH", 1, 1, rate_hz, rate_hz * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


# --- uploads -------------------------------------------------------------------------------------------

UPLOADS = {
    # name: (channels, source rate, container, codec, stream rate)
    "wav-s16-44k-stereo": (2, 44_100, "wav", "pcm_s16le", None),
    "wav-f32-48k": (1, 48_000, "wav", "pcm_f32le", None),
    "mp3-44k": (1, 44_100, "mp3", "mp3", None),
    "m4a-aac-16k-mono (WeChat recorder)": (1, 16_000, "mp4", "aac", None),
    "m4a-aac-44k-stereo (WeChat recorder)": (2, 44_100, "ipod", "aac", None),
    "aac-adts": (1, 22_050, "adts", "aac", None),
    "ogg-opus": (1, 48_000, "ogg", "libopus", None),
    "webm-opus (MediaRecorder)": (2, 48_000, "webm", "libopus", None),
}


@pytest.mark.parametrize("name", UPLOADS)
def test_uploads_decode_to_mono_float_at_the_target_rate(name: str) -> None:
    channels, rate_hz, container, codec, stream_rate_hz = UPLOADS[name]
    data = pyav_encode(
        speechlike(DURATION_S, rate_hz, channels), rate_hz, container, codec, stream_rate_hz=stream_rate_hz
    )

    pcm = decode_audio(data, target_rate_hz=16_000, max_duration_s=30)

    assert pcm.sample_rate_hz == 16_000
    assert pcm.samples.dtype == np.float32 and pcm.samples.ndim == 1
    # Raw ADTS has no priming info: its encoder delay and padding (two AAC frames) stay in.
    assert pcm.duration_s == pytest.approx(DURATION_S, abs=0.1)
    assert -25 < rms_dbfs(pcm) < -5
    assert np.abs(pcm.samples).max() <= 1.0


def test_native_rate_is_kept_without_a_target() -> None:
    pcm = decode_audio(pyav_encode(speechlike(1.0, 22_050), 22_050, "wav", "pcm_s16le"))
    assert pcm.sample_rate_hz == 22_050
    assert pcm.duration_s == pytest.approx(1.0, abs=1e-3)


def test_stereo_is_averaged_not_summed() -> None:
    """The same full-scale signal on both channels stays at its level (swresample would add +3 dB)."""
    t = np.arange(16_000) / 16_000
    tone = (0.9 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    pcm = decode_audio(pyav_encode(np.stack([tone, tone]), 16_000, "wav", "pcm_f32le"))
    assert np.abs(pcm.samples).max() == pytest.approx(0.9, abs=0.01)


def test_non_finite_float_samples_are_cleaned() -> None:
    samples = speechlike(0.5, 16_000)
    samples[0, :100] = np.nan
    samples[0, 100:200] = 4.0
    pcm = decode_audio(pyav_encode(samples, 16_000, "wav", "pcm_f32le"))
    assert np.isfinite(pcm.samples).all() and np.abs(pcm.samples).max() <= 1.0


# --- rejections -----------------------------------------------------------------------------------------


@functools.cache
def _rejected_inputs() -> dict[str, bytes]:
    mp3 = pyav_encode(speechlike(1.0, 16_000), 16_000, "mp3", "mp3")
    return {
        "empty": b"",
        "random bytes": np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes(),
        "png header": b"\x89PNG\r\n\x1a\n" + bytes(200),
        "png image": png_image(),
        "text": "今天天气很好。Hello, this is not audio.\n".encode() * 50,
        "truncated mp3": mp3[: id3_size(mp3) + 100],
        "video-only mp4": video_only_mp4(),
        "header only wav": wav_header_claiming(0),
        # Playlist demuxers would open the files they name; the whitelist stops them before probing.
        "hls playlist": b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        "ffconcat list": b"ffconcat version 1.0\nfile '/etc/passwd'\n",
    }


@pytest.mark.parametrize("name", list(_rejected_inputs()))
def test_not_audio_is_rejected(name: str) -> None:
    with pytest.raises(AudioDecodeError):
        decode_audio(_rejected_inputs()[name], target_rate_hz=16_000, max_duration_s=30)


def test_decompression_bomb_is_stopped_early() -> None:
    """Ten minutes of silence compress to ~50 kB of AAC; decoding stops just past the limit."""
    bomb = pyav_encode(np.zeros((1, 8_000 * 600), np.float32), 8_000, "adts", "aac", bit_rate_bps=16_000)
    assert len(bomb) < 100_000
    with pytest.raises(AudioDecodeError, match="longer than"):
        decode_audio(bomb, target_rate_hz=16_000, max_duration_s=30)


def test_wav_header_claiming_hours_is_not_trusted() -> None:
    one_second = (speechlike(1.0, 16_000)[0] * 32767).astype("<i2").tobytes()
    data = wav_header_claiming(0x7FFF_0000) + one_second  # claims about 18 hours

    assert decode_audio(data, max_duration_s=30).duration_s == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(AudioDecodeError, match="longer than"):
        decode_audio(data, max_duration_s=0.2)


def test_limit_allows_a_recorder_overshoot_only() -> None:
    data = pyav_encode(speechlike(2.2, 16_000), 16_000, "wav", "pcm_s16le")
    assert decode_audio(data, max_duration_s=2.0).duration_s == pytest.approx(2.2, abs=1e-3)
    with pytest.raises(AudioDecodeError):
        decode_audio(data, max_duration_s=1.5)


# --- our encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("audio_format", sorted(CONTENT_TYPES))
@pytest.mark.parametrize("rate_hz", [22_050, 24_000])
def test_encodings_round_trip_with_their_tags(audio_format: str, rate_hz: int) -> None:
    pcm = Pcm(speechlike(DURATION_S, rate_hz)[0], rate_hz)

    data = encode_audio(pcm, audio_format, metadata={"comment": "合成语音", "AIGC": AIGC_LABEL})
    decoded = decode_audio(data, max_duration_s=DURATION_S)
    tags = read_metadata(data)

    assert decoded.sample_rate_hz == rate_hz  # the engine's rate is kept
    assert decoded.duration_s == pytest.approx(DURATION_S, abs=0.05)
    assert rms_dbfs(decoded) == pytest.approx(rms_dbfs(pcm), abs=1.0)
    if audio_format == "wav":  # RIFF INFO has no slot for it: appended to the comment
        assert tags["comment"] == f"合成语音\nAIGC={AIGC_LABEL}"
    else:
        assert tags["comment"] == "合成语音" and tags["AIGC"] == AIGC_LABEL


def test_m4a_is_what_the_wechat_recorder_uploads() -> None:
    data = encode_audio(Pcm(speechlike(1.0, 24_000)[0], 24_000), "aac")

    assert data[4:12] == b"ftypM4A "
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while downloading
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert container.format.name.startswith("mov,mp4,m4a")
        assert (stream.codec_context.name, stream.codec_context.profile) == ("aac", "LC")
        assert stream.codec_context.channels == 1


def test_unsupported_rate_is_raised_to_the_next_standard_one() -> None:
    pcm = Pcm(speechlike(0.5, 20_000)[0], 20_000)
    assert decode_audio(encode_audio(pcm, "mp3")).sample_rate_hz == 22_050
    assert decode_audio(encode_audio(pcm, "wav")).sample_rate_hz == 20_000


def test_encoding_is_deterministic() -> None:
    pcm = Pcm(speechlike(1.0, 22_050)[0], 22_050)
    for audio_format in CONTENT_TYPES:
        assert encode_audio(pcm, audio_format, metadata={"AIGC": AIGC_LABEL}) == encode_audio(
            pcm, audio_format, metadata={"AIGC": AIGC_LABEL}
        )


def test_encode_refuses_unknown_formats_and_empty_audio() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        encode_audio(Pcm(np.zeros(100, np.float32), 16_000), "flac")
    with pytest.raises(ValueError, match="empty"):
        encode_audio(Pcm(np.zeros(0, np.float32), 16_000), "wav")
    assert issubclass(AudioDecodeError, AudioError)


# --- the stored sample and loudness -------------------------------------------------------------------


def test_sample_wav_is_16k_mono_s16_at_minus_1_dbfs() -> None:
    quiet = Pcm(0.05 * speechlike(3.0, 44_100)[0], 44_100)

    data = to_wav_16k_mono(quiet)
    pcm = decode_audio(data)

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.codec_context.channels) == ("pcm_s16le", 1)
    assert pcm.sample_rate_hz == 16_000
    assert pcm.duration_s == pytest.approx(3.0, abs=1e-3)
    assert 20 * np.log10(np.abs(pcm.samples).max()) == pytest.approx(-1.0, abs=0.1)


def test_silence_stays_silent() -> None:
    pcm = decode_audio(to_wav_16k_mono(Pcm(np.zeros(8_000, np.float32), 8_000)))
    assert not pcm.samples.any()
    assert rms_dbfs(pcm) == -120.0


def test_rms_of_a_full_scale_sine_is_minus_3_dbfs() -> None:
    sine = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000).astype(np.float32)
    assert rms_dbfs(Pcm(sine, 16_000)) == pytest.approx(-3.01, abs=0.01)
