"""Audio in and out with PyAV (its wheels bundle FFmpeg; no system ffmpeg).

Uploads are decoded by content, never by file name, through short lists of audio demuxers and
decoders; decoding stops as soon as the audio runs longer than the caller allows (decompression
bombs), and a file that ends well before its own index says is refused as truncated.
Everything here is synchronous and CPU-bound: callers run it in an executor.
"""

from __future__ import annotations

import io
import math
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "CONTENT_TYPES",
    "AudioDecodeError",
    "AudioError",
    "Mp3Encoder",
    "Mp3Run",
    "Pcm",
    "decode_audio",
    "encode_audio",
    "encode_mp3_run",
    "full_scale_fraction",
    "mux_mp3",
    "normalise_loudness",
    "read_metadata",
    "resample",
    "rms_dbfs",
    "to_wav_16k_mono",
]

CONTENT_TYPES: dict[str, str] = {"wav": "audio/wav", "mp3": "audio/mpeg", "aac": "audio/mp4"}

# Demuxers FFmpeg may pick while probing. Whitelisting them before probing (not only checking the
# result) keeps playlist/concat demuxers from opening other files or URLs named inside an upload.
_DEMUXER_WHITELIST = "wav,mp3,mov,aac,ogg,matroska"
# `container.format.name` of those demuxers: WAV, MP3, MP4/M4A (WeChat's recorder), ADTS AAC,
# Ogg (Opus), Matroska/WebM (browsers' MediaRecorder).
_ALLOWED_DEMUXERS = frozenset({"wav", "mp3", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "ogg", "matroska,webm"})
# Decoders for what recorders put in those containers: PCM (and G.711) in WAV, MP3, AAC, Opus.
# Matroska and WAV can carry nearly any codec; each extra decoder is more FFmpeg code exposed to
# uploads, so anything else is refused before a single packet is decoded.
_ALLOWED_DECODERS = frozenset(
    {
        *("pcm_u8", "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_alaw", "pcm_mulaw"),
        *("mp3float", "mp3", "aac", "aac_fixed", "opus", "libopus"),
    }
)
# FFmpeg gets the same decoder list for any decoder it opens itself while probing the streams.
_DECODE_OPTIONS = {
    "format_whitelist": _DEMUXER_WHITELIST,
    "codec_whitelist": ",".join(sorted(_ALLOWED_DECODERS)),
}

# Containers whose header or index states the length: MP4's sample tables, WebM's Duration (absent in
# live MediaRecorder files), MP3's Xing/Info tag (LAME and FFmpeg write one; without it FFmpeg
# estimates from the bit rate, exact for CBR). Ogg, ADTS and WAV lengths come from the data itself,
# so a cut-off file there is indistinguishable from a shorter recording.
_DECLARED_LENGTH_DEMUXERS = frozenset({"mp3", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"})
_TRUNCATED_FRACTION = 0.9  # margins for bit-rate estimates and encoder priming
_TRUNCATED_MIN_S = 1.0

MIN_SAMPLE_RATE_HZ = 8_000  # the lowest rate WeChat's RecorderManager records at
MAX_SAMPLE_RATE_HZ = 192_000
_DURATION_MARGIN_S = 0.5  # recorders overshoot a requested length by a few frames
_BIT_RATE_BPS = 64_000  # mono speech: transparent for AAC-LC, plenty for MP3
# Samples per MP3 (layer III) frame: 576 below 32 kHz (MPEG-2 and 2.5), 1152 from 32 kHz (MPEG-1).
_MP3_FRAME_SAMPLES = (576, 1152)
_MPEG1_MIN_RATE_HZ = 32_000
_SAMPLE_WAV_RATE_HZ = 16_000
_SAMPLE_WAV_PEAK_DBFS = -1.0
_SILENCE_FLOOR_DBFS = -120.0  # below 16-bit quantisation noise; keeps rms_dbfs finite
# Keys FFmpeg's WAV muxer can store in a RIFF INFO chunk; it silently drops any other key.
_RIFF_INFO_KEYS = frozenset({"artist", "comment", "copyright", "date", "genre", "language", "title"})


class AudioError(Exception):
    """Base of this module's errors."""


class AudioDecodeError(AudioError):
    """The bytes are not audio we accept: not decodable, no audio, wrong container, too long."""


class AudioTooLongError(AudioDecodeError):
    """Decoding stopped at `max_duration_s`: real audio, just too long (or a decompression bomb)."""


@dataclass(frozen=True, eq=False)  # eq by identity: comparing arrays element-wise has no truth value
class Pcm:
    """Mono float32 samples in -1..1 at `sample_rate_hz`."""

    samples: np.ndarray = field(repr=False)
    sample_rate_hz: int

    def __post_init__(self) -> None:
        if self.samples.dtype != np.float32 or self.samples.ndim != 1:
            raise TypeError("Pcm.samples must be a 1-D float32 array")
        if self.sample_rate_hz <= 0:
            raise ValueError("Pcm.sample_rate_hz must be positive")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate_hz


@dataclass(frozen=True)
class _Encoding:
    container: str
    codec: str
    suffix: str  # for the temporary file when the muxer needs a seekable, reopenable output
    container_options: dict[str, str]
    bit_rate_bps: int | None = None
    codec_options: dict[str, str] = field(default_factory=dict)


_ENCODINGS: dict[str, _Encoding] = {
    "wav": _Encoding("wav", "pcm_s16le", ".wav", {"fflags": "+bitexact"}),
    # "mp3" resolves to whichever MP3 encoder the bundled FFmpeg has (libmp3lame in PyAV's wheels).
    "mp3": _Encoding("mp3", "mp3", ".mp3", {"fflags": "+bitexact"}, _BIT_RATE_BPS),
    # AAC-LC in an M4A ("ipod" muxer, brand "M4A "), as WeChat's RecorderManager writes it. faststart
    # puts the index first so players can start before the download ends; use_metadata_tags keeps
    # keys iTunes atoms have no slot for (such as the AIGC label). The "fast" coder is 5x quicker
    # than the default "twoloop" and no worse on speech at this bit rate (measured).
    "aac": _Encoding(
        "ipod",
        "aac",
        ".m4a",
        {"fflags": "+bitexact", "movflags": "+faststart+use_metadata_tags"},
        _BIT_RATE_BPS,
        {"aac_coder": "fast"},
    ),
}


def decode_audio(
    data: bytes, *, target_rate_hz: int | None = None, max_duration_s: float | None = None
) -> Pcm:
    """Decode an upload to mono float32, resampled to `target_rate_hz` (default: the native rate).

    Raises AudioDecodeError for anything that is not audio in an accepted container, and as soon as
    the decoded audio exceeds `max_duration_s` (plus a small margin), whatever the headers claim.
    """
    if target_rate_hz is not None and not MIN_SAMPLE_RATE_HZ <= target_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise ValueError(f"target_rate_hz {target_rate_hz} is out of range")
    if not data:
        raise AudioDecodeError("the file is empty")
    max_decoded_s = None if max_duration_s is None else max_duration_s + _DURATION_MARGIN_S
    try:
        with av.open(io.BytesIO(data), "r", container_options=_DECODE_OPTIONS) as c:
            if c.format.name not in _ALLOWED_DEMUXERS:
                raise AudioDecodeError(f"container {c.format.name!r} is not accepted")
            if not c.streams.audio:
                raise AudioDecodeError("the file has no audio stream")
            decoder = c.streams.audio[0].codec_context.name
            if decoder not in _ALLOWED_DECODERS:
                raise AudioDecodeError(f"audio codec {decoder!r} is not accepted")
            pcm = _decode_stream(c, c.streams.audio[0], target_rate_hz, max_decoded_s)
            _check_not_truncated(c, pcm)
            return pcm
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"not decodable audio: {exc}") from exc


def _check_not_truncated(container: av.container.InputContainer, pcm: Pcm) -> None:
    """A file that ends well before the length its own index declares was cut off in transit."""
    if container.format.name not in _DECLARED_LENGTH_DEMUXERS or not container.duration:
        return
    declared_s = container.duration / av.time_base
    if pcm.duration_s < declared_s * _TRUNCATED_FRACTION and declared_s - pcm.duration_s > _TRUNCATED_MIN_S:
        raise AudioDecodeError(f"truncated: {pcm.duration_s:.1f} s of the {declared_s:.1f} s declared")


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.AudioStream,
    target_rate_hz: int | None,
    max_decoded_s: float | None,
) -> Pcm:
    parts: list[np.ndarray] = []
    decoded_s = 0.0
    out_rate_hz = target_rate_hz
    resampler: av.AudioResampler | None = None
    input_shape: tuple[str, str, int] | None = None
    for frame in container.decode(stream):
        if not MIN_SAMPLE_RATE_HZ <= frame.sample_rate <= MAX_SAMPLE_RATE_HZ:
            raise AudioDecodeError(f"sample rate {frame.sample_rate} Hz is out of range")
        decoded_s += frame.samples / frame.sample_rate
        if max_decoded_s is not None and decoded_s > max_decoded_s:
            raise AudioTooLongError(f"audio is longer than {max_decoded_s:.1f} s")
        out_rate_hz = out_rate_hz or frame.sample_rate
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if shape != input_shape:  # chained Ogg streams and the like change mid-file
            if resampler is not None:
                parts.extend(_downmix(resampler.resample(None)))
            # Planar float in the input's layout, averaged by us: swresample's stereo->mono matrix
            # weights each channel by 1/sqrt(2), so identical channels come out 3 dB hotter.
            resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=out_rate_hz)
            input_shape = shape
        parts.extend(_downmix(resampler.resample(frame)))
    if resampler is not None:
        parts.extend(_downmix(resampler.resample(None)))
    samples = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    if out_rate_hz is None or samples.size == 0:
        raise AudioDecodeError("the file has no decodable audio frames")
    # Float codecs (pcm_f32le, AAC overshoot) can carry NaN/inf or exceed full scale.
    np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    np.clip(samples, -1.0, 1.0, out=samples)
    return Pcm(samples, out_rate_hz)


def _downmix(frames: list[av.AudioFrame]) -> list[np.ndarray]:
    return [frame.to_ndarray().mean(axis=0, dtype=np.float32) for frame in frames]


def encode_audio(pcm: Pcm, audio_format: str, *, metadata: dict[str, str] | None = None) -> bytes:
    """Encode to "wav" (s16), "mp3" or "aac" (M4A), with `metadata` as container tags.

    The engine's rate is kept when the codec supports it (22050 and 24000 Hz do); otherwise the
    next supported rate up. WAV's RIFF INFO has fixed keys, so other keys are appended to its
    comment as `key=value` lines rather than lost.
    """
    encoding = _ENCODINGS.get(audio_format)
    if encoding is None:
        raise ValueError(f"unsupported output format {audio_format!r}; expected one of {sorted(_ENCODINGS)}")
    if pcm.samples.size == 0:
        raise ValueError("cannot encode empty audio")
    tags = dict(metadata or {})
    if audio_format == "wav":
        tags = _fold_into_riff_comment(tags)
    try:
        # A real file, not BytesIO: the MP4 muxer's faststart pass reopens its output by name.
        with tempfile.TemporaryDirectory(prefix="voicerelay-audio-") as tmp:
            path = Path(tmp) / f"out{encoding.suffix}"
            _mux(pcm, encoding, tags, str(path))
            return path.read_bytes()
    except av.FFmpegError as exc:
        raise AudioError(f"encoding {audio_format} failed: {exc}") from exc


def _mux(pcm: Pcm, encoding: _Encoding, tags: dict[str, str], path: str) -> None:
    codec = av.Codec(encoding.codec, "w")
    rate_hz = _supported_rate_hz(pcm.sample_rate_hz, codec.audio_rates)
    with av.open(path, "w", format=encoding.container, container_options=encoding.container_options) as out:
        out.metadata.update(tags)
        stream = out.add_stream(encoding.codec, rate=rate_hz, layout="mono", options=encoding.codec_options)
        if encoding.bit_rate_bps is not None:
            stream.bit_rate = encoding.bit_rate_bps
        stream.codec_context.flags |= av.codec.context.Flags.bitexact  # no version strings: same in, same out
        frame = _mono_frame(pcm)
        # PyAV converts format, rate and frame size to what the encoder wants.
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


class Mp3Encoder:
    """LAME over audio that arrives in pieces: the MP3 frames (one packet each) ready so far.

    One encoder for the whole run, so the frames join without gaps or clicks at the pieces' seams;
    `encode` returns the frames ready (the encoder keeps up to a frame back), `finish` the rest. Once
    finished, `run(frames)` describes them for `mux_mp3`: a file can then be made of several runs (the
    speech as it came, a tail encoded once). Blocking (CPU): call it off the event loop.
    """

    def __init__(self, sample_rate_hz: int) -> None:
        if not self.carries(sample_rate_hz):
            raise ValueError(f"MP3 cannot carry {sample_rate_hz} Hz")
        codec = av.Codec(_ENCODINGS["mp3"].codec, "w")
        self.sample_rate_hz = sample_rate_hz
        self._context = av.CodecContext.create(codec.name, "w")
        self._context.sample_rate = sample_rate_hz
        self._context.layout = "mono"
        self._context.format = "fltp"
        self._context.bit_rate = _BIT_RATE_BPS
        self._context.flags |= av.codec.context.Flags.bitexact  # as `encode_audio`: same in, same out
        self._pts = 0
        # FFmpeg's encoder tells its priming on the first packet and its padding on the last
        # (AV_PKT_DATA_SKIP_SAMPLES); the MP3 muxer writes both into the file's LAME tag.
        self._priming: av.packet.PacketSideData | None = None
        self._padding: av.packet.PacketSideData | None = None

    @staticmethod
    def carries(sample_rate_hz: int) -> bool:
        """Whether MP3 has `sample_rate_hz` (8 to 48 kHz, the usual rates)."""
        rates = av.Codec(_ENCODINGS["mp3"].codec, "w").audio_rates
        return _supported_rate_hz(sample_rate_hz, rates) == sample_rate_hz

    def encode(self, pcm: Pcm) -> list[bytes]:
        if pcm.sample_rate_hz != self.sample_rate_hz:
            raise ValueError(f"a {pcm.sample_rate_hz} Hz piece in a {self.sample_rate_hz} Hz stream")
        if pcm.samples.size == 0:
            return []
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts = self.sample_rate_hz, self._pts
        self._pts += pcm.samples.size
        return self._frames(self._context.encode(frame))

    def finish(self) -> list[bytes]:
        return self._frames(self._context.encode(None))

    def run(self, frames: Sequence[bytes]) -> Mp3Run:
        """`frames`, every frame this finished encoder made, with its priming and padding."""
        if self._priming is None or self._padding is None:
            raise AudioError("the MP3 encoder has not finished, or did not say its priming and padding")
        return Mp3Run(tuple(frames), self.sample_rate_hz, self._priming, self._padding)

    def _frames(self, packets: list[av.Packet]) -> list[bytes]:
        for packet in packets:
            skip = packet.get_sidedata("skip_samples")
            if skip:  # the first packet's says the priming, the last one's the padding (maybe both)
                if self._priming is None:
                    self._priming = skip
                self._padding = skip
        return [bytes(packet) for packet in packets]


@dataclass(frozen=True, eq=False)
class Mp3Run:
    """The MP3 frames of one encoder run, and the silence the encoder put around its audio.

    A decoder plays `priming_samples` before the audio and `padding_samples` after it, unless a LAME
    tag tells it to drop them: a file made of runs (`mux_mp3`) drops the first run's priming and the
    last one's padding, and plays the others' at the joins, where they are near silence.
    """

    frames: tuple[bytes, ...] = field(repr=False)
    sample_rate_hz: int
    priming: av.packet.PacketSideData = field(repr=False)
    padding: av.packet.PacketSideData = field(repr=False)

    @property
    def priming_samples(self) -> int:
        return _skip_samples(self.priming)[0]

    @property
    def padding_samples(self) -> int:
        return _skip_samples(self.padding)[1]


def _skip_samples(side_data: av.packet.PacketSideData) -> tuple[int, int]:
    # AV_PKT_DATA_SKIP_SAMPLES: u32le samples to skip at the start, u32le at the end, two reason bytes.
    start, end = struct.unpack_from("<II", bytes(memoryview(side_data)))
    return start, end


def encode_mp3_run(pcm: Pcm) -> Mp3Run:
    """`pcm` as one finished MP3 run (blocking)."""
    encoder = Mp3Encoder(pcm.sample_rate_hz)
    return encoder.run([*encoder.encode(pcm), *encoder.finish()])


def mux_mp3(runs: Sequence[Mp3Run], *, metadata: dict[str, str] | None = None) -> bytes:
    """One MP3 file of `runs` in order, with `metadata` as ID3 tags (blocking).

    FFmpeg's muxer writes the Info (Xing) and LAME tags, so players know the frame count, where to
    seek, and that the first run's priming and the last run's padding are not audio. The frames are
    copied, not re-encoded: a run encoded once (the AIGC label's tail) joins any number of files.
    """
    if not runs or not any(run.frames for run in runs):
        raise ValueError("cannot mux an MP3 file without frames")
    rate_hz = runs[0].sample_rate_hz
    if any(run.sample_rate_hz != rate_hz for run in runs):
        raise ValueError("the runs of one MP3 file must share a sample rate")
    encoding = _ENCODINGS["mp3"]
    frames = [frame for run in runs for frame in run.frames]
    time_base = Fraction(1, rate_hz)
    out_buffer = io.BytesIO()
    try:
        with av.open(
            out_buffer, "w", format=encoding.container, container_options=encoding.container_options
        ) as out:
            out.metadata.update(metadata or {})
            stream = out.add_stream(encoding.codec, rate=rate_hz, layout="mono")
            stream.bit_rate = encoding.bit_rate_bps
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            pts = -runs[0].priming_samples
            for index, data in enumerate(frames):
                packet = av.Packet(data)
                packet.pts = packet.dts = pts
                packet.duration = _MP3_FRAME_SAMPLES[rate_hz >= _MPEG1_MIN_RATE_HZ]
                packet.time_base = time_base
                packet.stream = stream
                if index == 0:
                    packet.set_sidedata(runs[0].priming)
                if index == len(frames) - 1:
                    packet.set_sidedata(runs[-1].padding)
                pts += packet.duration
                out.mux(packet)
    except av.FFmpegError as exc:
        raise AudioError(f"muxing MP3 failed: {exc}") from exc
    return out_buffer.getvalue()


def _supported_rate_hz(rate_hz: int, supported: tuple[int, ...] | None) -> int:
    if not supported or rate_hz in supported:
        return rate_hz
    higher = [r for r in supported if r > rate_hz]
    return min(higher) if higher else max(supported)


def _fold_into_riff_comment(tags: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in tags.items() if k in _RIFF_INFO_KEYS}
    extra = [f"{k}={v}" for k, v in tags.items() if k not in _RIFF_INFO_KEYS]
    if extra:
        kept["comment"] = "\n".join([kept["comment"], *extra] if "comment" in kept else extra)
    return kept


def read_metadata(data: bytes) -> dict[str, str]:
    """The container's tags (what `encode_audio` wrote), through the same demuxer whitelist."""
    try:
        with av.open(io.BytesIO(data), "r", container_options={"format_whitelist": _DEMUXER_WHITELIST}) as c:
            return dict(c.metadata)
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"not readable audio: {exc}") from exc


def rms_dbfs(pcm: Pcm) -> float:
    """Loudness as RMS in dB relative to full scale; silence gives -120."""
    if pcm.samples.size == 0:
        return _SILENCE_FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(pcm.samples, dtype=np.float64))))
    return max(_SILENCE_FLOOR_DBFS, 20.0 * math.log10(rms) if rms > 0 else _SILENCE_FLOOR_DBFS)


def full_scale_fraction(pcm: Pcm, *, level: float = 0.9) -> float:
    """The fraction of samples at or above `level` of full scale (0.9 is -0.9 dBFS).

    A measure of clipping that survives lossy codecs: they turn a clipped flat top into ripple
    around full scale, so counting exact ±1.0 runs finds it in WAV but misses it in MP3 or AAC.
    """
    if pcm.samples.size == 0:
        return 0.0
    return float(np.count_nonzero(np.abs(pcm.samples) >= level)) / pcm.samples.size


def normalise_loudness(pcm: Pcm, *, target_rms_dbfs: float, peak_ceiling_dbfs: float) -> Pcm:
    """A copy with one gain, toward `target_rms_dbfs` but never lifting the peak past
    `peak_ceiling_dbfs` (speech's peaks sit 12-20 dB above its RMS). Silence stays silence."""
    peak = float(np.max(np.abs(pcm.samples))) if pcm.samples.size else 0.0
    if peak <= 1e-6:
        return Pcm(pcm.samples.copy(), pcm.sample_rate_hz)
    gain_db = min(target_rms_dbfs - rms_dbfs(pcm), peak_ceiling_dbfs - 20 * math.log10(peak))
    samples = pcm.samples * np.float32(10 ** (gain_db / 20))
    return Pcm(samples.astype(np.float32, copy=False), pcm.sample_rate_hz)


def to_wav_16k_mono(pcm: Pcm) -> bytes:
    """16 kHz mono s16 WAV, peak-normalised to about -1 dBFS; silence stays silence (no gain).

    The gateway's intake stores loudness-normalised speech instead (`normalise_loudness`).
    """
    samples = resample(pcm, _SAMPLE_WAV_RATE_HZ)
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > 1e-6:
        samples = samples * np.float32(10 ** (_SAMPLE_WAV_PEAK_DBFS / 20) / peak)
    return encode_audio(Pcm(samples.astype(np.float32, copy=False), _SAMPLE_WAV_RATE_HZ), "wav")


def resample(pcm: Pcm, rate_hz: int) -> np.ndarray:
    """The samples at `rate_hz` (a copy), resampled by FFmpeg through PyAV."""
    if pcm.sample_rate_hz == rate_hz or pcm.samples.size == 0:
        return pcm.samples.copy()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_hz)
    out = [f.to_ndarray()[0] for f in [*resampler.resample(_mono_frame(pcm)), *resampler.resample(None)]]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


def _mono_frame(pcm: Pcm) -> av.AudioFrame:
    samples = np.ascontiguousarray(pcm.samples)[np.newaxis, :]
    frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
    frame.sample_rate = pcm.sample_rate_hz
    frame.pts = 0
    return frame
