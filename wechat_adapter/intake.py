"""Voice-sample intake: check and normalise an uploaded recording.

`analyse_sample` is CPU work (decoding, VAD, normalising) for the gateway's audio executor; reading
the upload off the request is `wechat_adapter.http.uploads`. The sample is kept at up to 24 kHz
(`stored_rate_hz`) while the VAD listens to a 16 kHz copy of it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from common import vad
from common.audio import (
    AudioDecodeError,
    AudioTooLongError,
    Pcm,
    decode_audio,
    encode_audio,
    full_scale_fraction,
    normalise_loudness,
    resample,
    rms_dbfs,
)
from wechat_adapter.errors import ApiError
from wechat_adapter.fields import MAX_SPEECH_S, MIN_SPEECH_S

# Decoding stops here: a short file that claims hours of audio is refused without decoding it all.
# Longer than MAX_SPEECH_S, since silence and pauses are trimmed away before that is checked.
DECODE_LIMIT_S = 60.0
# Speech this faint needs over 25 dB of gain, which lifts the room's noise with it.
QUIET_SPEECH_DBFS = -45.0
# "Heavy" clipping: over 2 % of speech samples within 1 dB of full scale. Normal speech peaked at
# 0 dBFS has about 0.05 % there, 6 dB of overdrive about 1 %, 10 dB 3-4 % (measured on espeak speech
# through WAV, MP3, AAC and Opus; lossy codecs keep the count, see `full_scale_fraction`).
CLIPPED_LEVEL = 0.9
CLIPPED_MAX_FRACTION = 0.02
# The stored rate: CosyVoice3's flow takes its prompt features at 24 kHz, so anything a 16 kHz sample
# would cut off (the speaker's 8-12 kHz: sibilants, breath, "air") is detail the clone can use.
# An upload below 24 kHz keeps its own rate (upsampling adds nothing), but never below 16 kHz, the
# least upstream CosyVoice accepts for a prompt: an 8 kHz upload is raised once, here.
STORED_RATE_HZ = 24_000
MIN_STORED_RATE_HZ = 16_000
TARGET_RMS_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0
# VAD: a little padding so onsets and tails survive; long pauses inside speech shrink to this.
SPEECH_PAD_MS = 100
MAX_PAUSE_S = 0.3
_VAD_PARAMS = vad.VadParams(speech_pad_ms=SPEECH_PAD_MS)


@dataclass(frozen=True, slots=True)
class Upload:
    """A voice upload as it arrived: the file and the fields beside it, not yet checked."""

    audio: bytes
    prompt_text: str
    name: str
    consent: str = ""  # "" when the upload carried none


@dataclass(frozen=True, slots=True)
class AcceptedSample:
    wav: bytes  # mono s16 WAV at sample_rate_hz
    sample_rate_hz: int
    duration_s: float
    sha256: str


def stored_rate_hz(upload_rate_hz: int) -> int:
    """The rate a sample is kept at: 24 kHz, or the upload's own rate when lower, but at least 16 kHz."""
    return min(STORED_RATE_HZ, max(MIN_STORED_RATE_HZ, upload_rate_hz))


def analyse_sample(audio: bytes) -> AcceptedSample:
    """Decode by content, keep the speech, check it, and produce the mono WAV engines read, at the
    rate `stored_rate_hz` picks for the upload.

    Deterministic: the same upload gives the same WAV and hash.
    """
    if not audio:
        raise ApiError("audio_invalid", detail="empty file")
    try:
        # Native rate: decoded once, then resampled for storage and, separately, for the VAD.
        pcm = decode_audio(audio, target_rate_hz=None, max_duration_s=DECODE_LIMIT_S)
    except AudioTooLongError as exc:
        raise ApiError("audio_too_long", detail=str(exc)) from None
    except AudioDecodeError as exc:
        raise ApiError("audio_invalid", detail=str(exc)) from None
    rate_hz = stored_rate_hz(pcm.sample_rate_hz)
    recording = resample(pcm, rate_hz)
    spans_16k = vad.speech_spans(resample(pcm, vad.SAMPLE_RATE_HZ), _VAD_PARAMS)
    if not spans_16k:
        raise ApiError("audio_silent", detail=f"no speech in {pcm.duration_s:.1f} s")
    spans = _spans_at(spans_16k, rate_hz, len(recording))
    max_pause = round(MAX_PAUSE_S * rate_hz)
    speech = Pcm(vad.keep_speech(recording, spans, max_pause_samples=max_pause), rate_hz)
    _check_speech(speech)
    stored = normalise_loudness(speech, target_rms_dbfs=TARGET_RMS_DBFS, peak_ceiling_dbfs=PEAK_CEILING_DBFS)
    wav = encode_audio(stored, "wav")
    return AcceptedSample(wav, rate_hz, round(stored.duration_s, 2), hashlib.sha256(wav).hexdigest())


def _spans_at(spans_16k: list[vad.SpeechSpan], rate_hz: int, n_samples: int) -> list[vad.SpeechSpan]:
    """The VAD's spans (16 kHz sample indices) as indices into the same audio at `rate_hz`.

    FFmpeg's resampler adds no delay, so index i at 16 kHz and i * rate_hz / 16 kHz are the same
    moment; integer arithmetic keeps the cut the same on every run.
    """

    def at_rate(index: int) -> int:
        return min(n_samples, index * rate_hz // vad.SAMPLE_RATE_HZ)

    return [(at_rate(start), at_rate(end)) for start, end in spans_16k]


def _check_speech(speech: Pcm) -> None:
    """Refuse speech that is too faint, too short, too long or heavily clipped, in that order."""
    if (level_dbfs := rms_dbfs(speech)) < QUIET_SPEECH_DBFS:
        raise ApiError("audio_silent", detail=f"speech at {level_dbfs:.1f} dBFS")
    if speech.duration_s < MIN_SPEECH_S:
        raise ApiError("audio_too_short", detail=f"{speech.duration_s:.1f} s of speech")
    if speech.duration_s > MAX_SPEECH_S:
        raise ApiError("audio_too_long", detail=f"{speech.duration_s:.1f} s of speech")
    if (clipped := full_scale_fraction(speech, level=CLIPPED_LEVEL)) > CLIPPED_MAX_FRACTION:
        raise ApiError("audio_clipped", detail=f"{clipped:.1%} of samples at full scale")
