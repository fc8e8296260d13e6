"""Reading a voice upload off the request: `wx.uploadFile` multipart or JSON with base64 audio.

It runs on the event loop but never buffers more than the limit; checking the audio is
`wechat_adapter.intake`, on the audio executor.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from wechat_adapter.errors import ApiError
from wechat_adapter.http.requests import read_json_object
from wechat_adapter.intake import Upload

_FIELD_MAX_BYTES = 4096
_CHUNK_BYTES = 64 * 1024


def _json_upload_max_bytes(audio_max_bytes: int) -> int:
    """The largest upload body: the audio as base64 (4/3 of it), plus room for the other fields."""
    return audio_max_bytes * 4 // 3 + 64 * 1024


async def read_upload(request: web.Request, *, max_bytes: int) -> Upload:
    """The sample and its fields from `wx.uploadFile` multipart or a JSON body with base64 audio."""
    if request.content_length is not None and request.content_length > _json_upload_max_bytes(max_bytes):
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
            elif part.name in {"prompt_text", "name", "consent"}:
                raw = await _read_part(part, _FIELD_MAX_BYTES, "text_too_long")
                fields[part.name] = raw.decode("utf-8")
            else:
                raise ApiError("invalid_request", detail=f"unexpected form field {part.name!r}")
    except (ValueError, UnicodeDecodeError, AssertionError, HttpProcessingError) as exc:
        raise ApiError("invalid_request", detail=f"malformed multipart body: {exc}") from None
    if audio is None:
        raise ApiError("invalid_request", detail="form field 'file' is missing")
    return Upload(audio, fields.get("prompt_text", ""), fields.get("name", ""), fields.get("consent", ""))


async def _read_json(request: web.Request, max_bytes: int) -> Upload:
    # Base64 is 4/3 of the audio; the other fields fit in the rest.
    body = await read_json_object(
        request, max_bytes=_json_upload_max_bytes(max_bytes), too_large="audio_too_large"
    )
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
    consent = body.get("consent")
    if consent is None:  # absent or null: refused as `consent_required` by the enrolment
        consent = ""
    if not isinstance(consent, str):
        raise ApiError("invalid_request", detail="consent must be a string")
    return Upload(audio, prompt_text, name, consent)
