"""Voice-sample intake (issue #4): silero VAD through onnxruntime, and `analyse_sample` behind
POST /v1/voices — every accepted format round-trips, every refusal has its code and stores nothing.

Test audio is made here from espeak speech (ops.samples) and PyAV; no binary fixtures.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import av
import numpy as np
import pytest
from stack import Stack, speech
from test_audio import png_image, pyav_encode, video_only_mp4
from test_rejections import assert_error, nothing_changed, quiet_stream, upload

from common import vad
from common.audio import Pcm, decode_audio, encode_audio, resample, rms_dbfs
from wechat_adapter.intake import (
    MAX_PAUSE_S,
    MAX_SPEECH_S,
    MIN_SPEECH_S,
    PEAK_CEILING_DBFS,
    SPEECH_PAD_MS,
    STORED_RATE_HZ,
    TARGET_RMS_DBFS,
    analyse_sample,
)

RATE_HZ = vad.SAMPLE_RATE_HZ  # the test audio's rate unless a test says otherwise (stored as it is)

# --- test audio ----------------------------------------------------------------------------------------


@functools.cache
def speech_at(rate_hz: int) -> np.ndarray:
    """About 7.8 s of espeak Mandarin (22.05 kHz, so up to 11 kHz) at `rate_hz`, peak-normalised to
    -1 dBFS (RMS about -20 dBFS)."""
    samples = resample(speech(), rate_hz)
    return (samples * np.float32(0.89 / np.abs(samples).max())).astype(np.float32)


def speech_16k() -> np.ndarray:
    return speech_at(RATE_HZ)


def trimmed_s() -> float:
    """What intake keeps of speech_16k() between silences: the speech and its padding each side."""
    return len(speech_16k()) / RATE_HZ + 2 * SPEECH_PAD_MS / 1000


def pcm(*pieces: np.ndarray, rate_hz: int = RATE_HZ) -> Pcm:
    return Pcm(np.concatenate(pieces).astype(np.float32), rate_hz)


def silence(seconds: float, rate_hz: int = RATE_HZ) -> np.ndarray:
    return np.zeros(round(seconds * rate_hz), np.float32)


def speech_of(seconds: float) -> np.ndarray:
    """Continuous speech of any length (the sample, repeated or cut)."""
    return np.resize(speech_16k(), round(seconds * RATE_HZ))


def at_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """Louder or softer; past full scale it clips, as an overdriven microphone does."""
    return np.clip(samples * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


def encoded(audio: Pcm, kind: str) -> bytes:
    """The recording in one of the formats phones and browsers upload."""
    one_channel = audio.samples[np.newaxis, :]
    match kind:
        case "wav" | "mp3":
            return encode_audio(audio, kind)
        case "m4a":  # AAC-LC in M4A, as WeChat's RecorderManager writes it
            return encode_audio(audio, "aac")
        case "aac-adts":
            return pyav_encode(one_channel, audio.sample_rate_hz, "adts", "aac")
        case "ogg-opus":
            return pyav_encode(one_channel, audio.sample_rate_hz, "ogg", "libopus", stream_rate_hz=48_000)
        case "webm-opus":  # what MediaRecorder gives the H5 demo page
            return pyav_encode(one_channel, audio.sample_rate_hz, "webm", "libopus", stream_rate_hz=48_000)
    raise ValueError(kind)


ACCEPTED_FORMATS = ["wav", "mp3", "m4a", "aac-adts", "ogg-opus", "webm-opus"]


def zipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("voice.wav", data)
    return buffer.getvalue()


def stored_wav_facts(wav: bytes) -> tuple[str, int, int]:
    """(codec, channels, sample rate) of a stored sample."""
    with av.open(io.BytesIO(wav)) as container:
        context = container.streams.audio[0].codec_context
        return context.name, context.channels, context.sample_rate


# --- the VAD --------------------------------------------------------------------------------------------


def test_the_gateway_side_needs_no_torch() -> None:
    """The model is found and run without importing silero_vad (whose __init__ imports torch)."""
    script = (
        "import sys, numpy as np\n"
        "from common import vad\n"
        "import wechat_adapter.intake\n"
        "assert vad.speech_spans(np.zeros(16000, np.float32)) == []\n"
        "assert 'torch' not in sys.modules and 'silero_vad' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_probabilities_are_upstreams() -> None:
    """Window for window what silero-vad's own OnnxWrapper computes from the same model file."""
    utils_vad = pytest.importorskip("silero_vad.utils_vad")  # needs torch: dev environments only
    import torch

    samples = np.concatenate([silence(0.5), speech_16k()[: 3 * RATE_HZ + 123]])
    model = utils_vad.OnnxWrapper(str(vad.model_path()), force_onnx_cpu=True)

    upstream = model.audio_forward(torch.from_numpy(samples.copy()), RATE_HZ).numpy()[0]

    np.testing.assert_allclose(vad.speech_probabilities(samples), upstream, atol=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_spans_follow_upstreams_state_machine(seed: int) -> None:
    """On random probability walks, with default and intake parameters, the same spans as
    silero-vad's get_speech_timestamps_from_probs."""
    utils_vad = pytest.importorskip("silero_vad.utils_vad")
    rng = np.random.default_rng(seed)
    probabilities = np.clip(np.cumsum(rng.normal(0, 0.2, 400)) % 2 - 0.5, 0, 1).astype(np.float32)
    n_samples = len(probabilities) * vad.WINDOW_SAMPLES - int(rng.integers(0, vad.WINDOW_SAMPLES))
    for params in (vad.VadParams(), vad.VadParams(threshold=0.6, min_silence_ms=300, speech_pad_ms=100)):
        upstream = utils_vad.get_speech_timestamps_from_probs(
            probabilities.tolist(),
            sampling_rate=RATE_HZ,
            threshold=params.threshold,
            min_speech_duration_ms=params.min_speech_ms,
            min_silence_duration_ms=params.min_silence_ms,
            speech_pad_ms=params.speech_pad_ms,
            audio_length_samples=n_samples,
        )
        ours = vad.spans_from_probabilities(probabilities, n_samples, params)
        assert ours == [(s["start"], s["end"]) for s in upstream]


def test_espeak_mandarin_is_speech_and_silence_around_it_is_not() -> None:
    rng = np.random.default_rng(3)
    room = (rng.standard_normal(2 * RATE_HZ) * 0.003).astype(np.float32)  # -50 dBFS of room noise
    samples = np.concatenate([room, speech_16k(), room])
    audible = np.flatnonzero(np.abs(samples) > 0.02) / RATE_HZ
    onset_s, offset_s = audible[0], audible[-1]

    spans = vad.speech_spans(samples, vad.VadParams(speech_pad_ms=SPEECH_PAD_MS))

    assert spans, "espeak's Mandarin was not recognised as speech"
    # With the intake's padding the spans hold every audible sample, and little more.
    assert onset_s - 0.2 <= spans[0][0] / RATE_HZ <= onset_s
    assert offset_s <= spans[-1][1] / RATE_HZ <= offset_s + 0.35
    assert vad.speech_spans(room) == vad.speech_spans(silence(2)) == []


def test_keep_speech_drops_the_edges_and_shortens_long_pauses_only() -> None:
    samples = np.arange(1200, dtype=np.float32)
    spans = [(100, 200), (250, 300), (1000, 1100)]

    kept = vad.keep_speech(samples, spans, max_pause_samples=60)

    # The 50-sample pause stays whole; of the 700-sample one, 30 samples each side remain.
    expected = np.concatenate([samples[100:300], samples[300:330], samples[970:1100]])
    np.testing.assert_array_equal(kept, expected)
    assert vad.keep_speech(samples, [], max_pause_samples=60).size == 0


def test_one_session_per_process_even_when_threads_race(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad, "_session", None)
    start = threading.Barrier(4)

    def session_after_barrier(_: int) -> object:
        start.wait()
        return vad._get_session()

    with ThreadPoolExecutor(4) as pool:
        sessions = set(map(id, pool.map(session_after_barrier, range(4))))

    assert len(sessions) == 1
    assert vad._get_session().get_session_options().intra_op_num_threads == 1


# --- analyse_sample -------------------------------------------------------------------------------------


def test_a_sample_is_trimmed_normalised_and_stored_as_mono_wav() -> None:
    quiet = at_gain(speech_16k(), -20)  # a distant phone: about -40 dBFS
    upload_bytes = encoded(pcm(silence(1.5), quiet, silence(2.0)), "m4a")

    sample = analyse_sample(upload_bytes)
    stored = decode_audio(sample.wav)

    assert sample.sample_rate_hz == RATE_HZ  # a 16 kHz upload keeps its rate
    assert stored_wav_facts(sample.wav) == ("pcm_s16le", 1, RATE_HZ)
    assert sample.duration_s == pytest.approx(trimmed_s(), abs=0.1)  # the silence around it is gone
    assert stored.duration_s == pytest.approx(sample.duration_s, abs=0.01)
    # 20 dB of gain: the target loudness, and the peaks stay under the ceiling.
    assert rms_dbfs(stored) == pytest.approx(TARGET_RMS_DBFS, abs=0.3)
    assert 20 * np.log10(np.abs(stored.samples).max()) <= PEAK_CEILING_DBFS + 0.05
    assert sample.sha256 == hashlib.sha256(sample.wav).hexdigest()
    assert analyse_sample(upload_bytes) == sample  # deterministic: same upload, same bytes and hash


@pytest.mark.parametrize(
    ("upload_hz", "kind", "stored_hz"),
    [
        (48_000, "wav", STORED_RATE_HZ),
        (48_000, "webm-opus", STORED_RATE_HZ),  # the H5 page's MediaRecorder
        (44_100, "m4a", STORED_RATE_HZ),
        (24_000, "m4a", STORED_RATE_HZ),  # the mini program's recorder
        (22_050, "wav", 22_050),
        (8_000, "wav", 16_000),
    ],
)
def test_a_sample_is_kept_at_24khz_or_its_own_lower_rate_but_never_below_16khz(
    upload_hz: int, kind: str, stored_hz: int
) -> None:
    recording = pcm(silence(0.8, upload_hz), speech_at(upload_hz), silence(1.2, upload_hz), rate_hz=upload_hz)
    upload_bytes = encoded(recording, kind)

    sample = analyse_sample(upload_bytes)
    stored = decode_audio(sample.wav)

    assert sample.sample_rate_hz == stored_hz
    assert stored_wav_facts(sample.wav) == ("pcm_s16le", 1, stored_hz)
    assert sample.duration_s == pytest.approx(trimmed_s(), abs=0.1)
    assert stored.duration_s == pytest.approx(sample.duration_s, abs=0.01)
    assert rms_dbfs(stored) == pytest.approx(TARGET_RMS_DBFS, abs=0.3)
    assert analyse_sample(upload_bytes) == sample


def test_a_48khz_upload_keeps_the_voice_above_8khz() -> None:
    """What a 16 kHz sample would lose: a 10 kHz component of the voice reaches the stored sample whole."""
    rate_hz = 48_000
    t = np.arange(speech_at(rate_hz).size) / rate_hz
    voice = 0.8 * speech_at(rate_hz) + (0.05 * np.sin(2 * np.pi * 10_000 * t)).astype(np.float32)
    tone_share = 0.05**2 / 2 / float(np.mean(np.square(voice, dtype=np.float64)))  # a sine's power: A²/2

    sample = analyse_sample(
        encoded(pcm(silence(1, rate_hz), voice, silence(1, rate_hz), rate_hz=rate_hz), "wav")
    )
    stored = decode_audio(sample.wav)

    power = np.abs(np.fft.rfft(stored.samples.astype(np.float64))) ** 2
    hz = np.fft.rfftfreq(stored.samples.size, 1 / stored.sample_rate_hz)
    assert power[(hz > 9_900) & (hz < 10_100)].sum() / power.sum() == pytest.approx(tone_share, rel=0.2)


def test_a_long_leading_silence_is_trimmed_at_48khz() -> None:
    """The VAD's 16 kHz spans cut the 24 kHz sample at the same moments: speech starts within the
    padding, not seconds in (as it would were the indices taken as they are)."""
    rate_hz = 48_000
    recording = pcm(silence(6, rate_hz), speech_at(rate_hz), silence(1, rate_hz), rate_hz=rate_hz)

    sample = analyse_sample(encoded(recording, "wav"))
    stored = decode_audio(sample.wav)

    assert sample.duration_s == pytest.approx(trimmed_s(), abs=0.1)
    audible_s = np.flatnonzero(np.abs(stored.samples) > 0.02) / stored.sample_rate_hz
    assert audible_s[0] <= 2 * SPEECH_PAD_MS / 1000
    assert stored.duration_s - audible_s[-1] <= 0.35


def test_pauses_do_not_count_toward_the_speech_limits() -> None:
    """40 s of recording, 16 s of it speech: accepted, with the 20 s pause cut to MAX_PAUSE_S."""
    once = analyse_sample(encoded(pcm(silence(3), speech_16k(), silence(3)), "wav"))
    recording = pcm(silence(3), speech_16k(), silence(20), speech_16k(), silence(9))
    assert recording.duration_s > MAX_SPEECH_S

    sample = analyse_sample(encoded(recording, "wav"))

    assert sample.duration_s == pytest.approx(2 * once.duration_s + MAX_PAUSE_S, abs=0.05)


@pytest.mark.parametrize("kind", ["wav", "mp3", "m4a", "ogg-opus"])
@pytest.mark.parametrize("gain_db", [1.0, 3.0])
def test_a_loud_recording_is_not_called_clipped(kind: str, gain_db: float) -> None:
    """Peaks at and a little past full scale (a few flattened tops) are normal for a close phone."""
    assert analyse_sample(encoded(pcm(at_gain(speech_16k(), gain_db)), kind)).duration_s > MIN_SPEECH_S


# --- over HTTP: refusals store nothing ------------------------------------------------------------------


def _faint_speech() -> Pcm:
    """Clearly speech to the VAD, but near -60 dBFS: it would take 40 dB of gain."""
    return pcm(at_gain(speech_16k(), -40))


def _noise(seconds: float) -> np.ndarray:
    """Steady hiss at about -20 dBFS: loud, but nobody speaking."""
    return (np.random.default_rng(5).standard_normal(round(seconds * RATE_HZ)) * 0.1).astype(np.float32)


def _cut(data: bytes) -> bytes:
    return data[: len(data) * 6 // 10]


REFUSALS: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "digital_silence": (lambda: encoded(pcm(silence(8)), "m4a"), 400, "audio_silent"),
    "noise_without_speech": (
        lambda: encoded(pcm(_noise(8)), "wav"),
        400,
        "audio_silent",
    ),
    "faint_speech": (lambda: encoded(_faint_speech(), "wav"), 400, "audio_silent"),
    "2s_speech_in_10s_silence": (
        lambda: encoded(pcm(silence(5), speech_of(2), silence(5)), "m4a"),
        400,
        "audio_too_short",
    ),
    "35s_of_speech": (lambda: encoded(pcm(speech_of(35)), "m4a"), 400, "audio_too_long"),
    "past_the_decode_limit": (lambda: encoded(pcm(speech_of(70)), "ogg-opus"), 400, "audio_too_long"),
    "clipped_wav": (lambda: encoded(pcm(at_gain(speech_16k(), 12)), "wav"), 400, "audio_clipped"),
    "clipped_m4a": (lambda: encoded(pcm(at_gain(speech_16k(), 12)), "m4a"), 400, "audio_clipped"),
    "png_image": (png_image, 400, "audio_invalid"),
    "text": (lambda: "这不是录音，是一段文字。\n".encode() * 200, 400, "audio_invalid"),
    "zip_of_a_wav": (lambda: zipped(encoded(pcm(speech_16k()), "wav")), 400, "audio_invalid"),
    "video_without_audio": (video_only_mp4, 400, "audio_invalid"),
    "flac_in_matroska": (
        lambda: pyav_encode(speech_16k()[np.newaxis, :], RATE_HZ, "matroska", "flac"),
        400,
        "audio_invalid",
    ),
    "truncated_m4a": (lambda: _cut(encoded(pcm(speech_16k()), "m4a")), 400, "audio_invalid"),
    "truncated_mp3": (lambda: _cut(encoded(pcm(speech_16k()), "mp3")), 400, "audio_invalid"),
    "truncated_webm": (lambda: _cut(encoded(pcm(speech_16k()), "webm-opus")), 400, "audio_invalid"),
    # 30 s of 48 kHz stereo WAV is 5.8 MB: real audio, refused for its size alone.
    "wav_over_5mb": (
        lambda: pyav_encode(
            np.tile(speech_of(30), (2, 1)), RATE_HZ, "wav", "pcm_s16le", stream_rate_hz=48_000
        ),
        413,
        "audio_too_large",
    ),
}


@functools.cache
def refused_upload(case: str) -> bytes:
    return REFUSALS[case][0]()


@pytest.fixture(scope="module")
async def quiet(stack: Stack) -> None:
    """Earlier modules' background work (reviews, notifications) has settled: the stream is still."""
    await quiet_stream(stack)


@pytest.mark.parametrize("as_base64", [False, True], ids=["multipart", "base64"])
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_sample_answers_its_code_and_stores_nothing(
    stack: Stack, quiet: None, case: str, as_base64: bool
) -> None:
    data = await asyncio.to_thread(refused_upload, case)
    _, status, code = REFUSALS[case]
    user = await stack.user()
    async with nothing_changed(stack, user):
        assert_error(await upload(user, data, as_base64=as_base64, filename="voice.m4a"), status, code)


async def test_a_recording_in_a_body_of_the_wrong_type_is_refused(stack: Stack, quiet: None) -> None:
    user = await stack.user()
    async with nothing_changed(stack, user):
        reply = await user.request(
            "POST",
            "/v1/voices",
            data=encoded(pcm(speech_16k()), "mp3"),
            headers={"Content-Type": "audio/mpeg"},
        )
        assert_error(reply, 415, "unsupported_media_type")


# --- over HTTP: every accepted format round-trips -------------------------------------------------------


@functools.cache
def accepted_upload(kind: str) -> bytes:
    return encoded(pcm(silence(0.8), speech_16k(), silence(1.2)), kind)


@pytest.mark.parametrize("as_base64", [False, True], ids=["multipart", "base64"])
@pytest.mark.parametrize("kind", ACCEPTED_FORMATS)
async def test_every_accepted_format_round_trips(stack: Stack, kind: str, as_base64: bool) -> None:
    data = await asyncio.to_thread(accepted_upload, kind)
    user = await stack.user()

    # The part's name and type say MP3 whatever it holds: the content decides.
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(data), filename="recording.mp3", content_type="audio/mpeg")
    form.add_field("prompt_text", "今天天气很好，我们一起去公园散步吧。")
    form.add_field("consent", "authorized")
    created = (
        await upload(user, data, as_base64=True)
        if as_base64
        else await user.request("POST", "/v1/voices", data=form)
    )

    assert created.status == 201, created.body
    voice = created.body
    assert voice["duration_s"] == pytest.approx(trimmed_s(), abs=0.1)
    listed = await user.request("GET", "/v1/voices")
    assert [v["voice_id"] for v in listed.body["voices"]] == [voice["voice_id"]]
    audio = await user.request("GET", f"/v1/voices/{voice['voice_id']}/audio")
    assert audio.status == 200
    assert audio.headers["Content-Type"].startswith("audio/wav")
    # Opus always decodes at 48 kHz, so those are kept at 24 kHz; the others keep their 16 kHz.
    stored_hz = STORED_RATE_HZ if kind.endswith("-opus") else RATE_HZ
    assert stored_wav_facts(audio.body) == ("pcm_s16le", 1, stored_hz)
    assert decode_audio(audio.body).duration_s == pytest.approx(voice["duration_s"], abs=0.01)
