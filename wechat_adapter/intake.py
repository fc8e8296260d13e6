"""Voice-sample intake: read the upload within limits, then check and normalise the audio.

`read_upload` runs on the event loop but never buffers more than the limit; `analyse_sample`
is CPU work (decoding, VAD, normalising) for the gateway's audio executor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

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
from wechat_adapter.views.common import read_json_object

MIN_SPEECH_S = 3.0
MAX_SPEECH_S = 30.0
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
_FIELD_MAX_BYTES = 4096
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    audio: bytes
    prompt_text: str
    name: str


@dataclass(frozen=True, slots=True)
class AcceptedSample:
    wav_16k: bytes
    duration_s: float
    sha256: str


async def read_upload(request: web.Request, *, max_bytes: int) -> Upload:
    """The sample and its fields from `wx.uploadFile` multipart or a JSON body with base64 audio."""
    if request.content_length is not None and request.content_length > max_bytes * 4 // 3 + 64 * 1024:
        raise ApiError("audio_too_large", detail=f"Content-Length {request.content_length}")
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request, max_bytes)
    if request.content_type == "application/json":
        return await _read_json(request, max_bytes)
    raise ApiError("unsupported_media_type", detail=f"content type {request.content_type!r}")


async def _read_part(part: BodyPartReader, limit: int, too_large: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(_CHUNK_BYTES):
        data += chunk
        if len(data) > limit:
            raise ApiError(too_large, detail=f"part {part.name!r} is over {limit} bytes")
    return bytes(data)


async def _read_multipart(request: web.Request, max_bytes: int) -> Upload:
    fields: dict[str, str] = {}
    audio: bytes | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError("invalid_request", detail="nested multipart")
            # One of each: a repeated part is ambiguous, and without a Content-Length (chunked) it
            # would let one request stream any number of 5 MB files through us.
            if part.name in fields or (part.name == "file" and audio is not None):
                raise ApiError("invalid_request", detail=f"form field {part.name!r} is repeated")
            if part.name == "file":
                audio = await _read_part(part, max_bytes, "audio_too_large")
            elif part.name in {"prompt_text", "name"}:
                raw = await _read_part(part, _FIELD_MAX_BYTES, "text_too_long")
                fields[part.name] = raw.decode("utf-8")
            else:
                raise ApiError("invalid_request", detail=f"unexpected form field {part.name!r}")
    except (ValueError, UnicodeDecodeError, AssertionError, HttpProcessingError) as exc:
        raise ApiError("invalid_request", detail=f"malformed multipart body: {exc}") from None
    if audio is None:
        raise ApiError("invalid_request", detail="form field 'file' is missing")
    return Upload(audio, fields.get("prompt_text", ""), fields.get("name", ""))


async def _read_json(request: web.Request, max_bytes: int) -> Upload:
    body = await read_json_object(request)
    encoded = body.get("audio_base64")
    if not isinstance(encoded, str) or not encoded:
        raise ApiError("invalid_request", detail="audio_base64 must be a non-empty string")
    if encoded.startswith("data:"):  # a data: URL as FileReader produces
        encoded = encoded.partition(",")[2]
    if len(encoded) > max_bytes * 4 // 3 + 4:
        raise ApiError("audio_too_large", detail="audio_base64 is over the limit")
    try:
        audio = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError("audio_invalid", detail="audio_base64 is not valid base64") from None
    prompt_text, name = body.get("prompt_text", ""), body.get("name", "")
    if not isinstance(prompt_text, str) or not isinstance(name, str):
        raise ApiError("invalid_request", detail="prompt_text and name must be strings")
    return Upload(audio, prompt_text, name)


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
