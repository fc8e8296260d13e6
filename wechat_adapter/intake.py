"""Voice-sample intake: check and normalise an uploaded recording.

`analyse_sample` is CPU work (decoding, VAD, normalising) for the gateway's audio executor; reading
the upload off the request is `wechat_adapter.http.uploads`.
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
    wav_16k: bytes
    duration_s: float
    sha256: str


def analyse_sample(audio: bytes) -> AcceptedSample:
    """Decode by content, keep the speech, check it, and produce the 16 kHz mono WAV engines read.

    Deterministic: the same upload gives the same WAV and hash.
    """
    if not audio:
        raise ApiError("audio_invalid", detail="empty file")
    try:
        pcm = decode_audio(audio, target_rate_hz=vad.SAMPLE_RATE_HZ, max_duration_s=DECODE_LIMIT_S)
    except AudioTooLongError as exc:
        raise ApiError("audio_too_long", detail=str(exc)) from None
    except AudioDecodeError as exc:
        raise ApiError("audio_invalid", detail=str(exc)) from None
    spans = vad.speech_spans(pcm.samples, _VAD_PARAMS)
    if not spans:
        raise ApiError("audio_silent", detail=f"no speech in {pcm.duration_s:.1f} s")
    max_pause = round(MAX_PAUSE_S * vad.SAMPLE_RATE_HZ)
    speech = Pcm(vad.keep_speech(pcm.samples, spans, max_pause_samples=max_pause), vad.SAMPLE_RATE_HZ)
    _check_speech(speech)
    stored = normalise_loudness(speech, target_rms_dbfs=TARGET_RMS_DBFS, peak_ceiling_dbfs=PEAK_CEILING_DBFS)
    wav = encode_audio(stored, "wav")
    return AcceptedSample(wav, round(stored.duration_s, 2), hashlib.sha256(wav).hexdigest())


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
