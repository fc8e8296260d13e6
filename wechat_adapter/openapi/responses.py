"""The document's responses: success bodies, audio with byte ranges, and the error responses.

An operation names the error codes it can answer with; `errors()` groups them by the HTTP status
`errors.ERRORS` gives each, so a code and its status cannot disagree with the server.
"""

from __future__ import annotations

from collections.abc import Iterable

from wechat_adapter.errors import ERRORS
from wechat_adapter.openapi.schemas import Json, error_schema, ref

# Every response of every route may be this: the error middleware turns any unexpected failure into it.
ALWAYS = ("internal",)
# What reading any JSON body can fail with: over 16 KB it is refused before parsing; a string holding
# a lone surrogate is `invalid_request`.
JSON_BODY = ("unsupported_media_type", "invalid_json", "invalid_request", "request_too_large")


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema_name: str) -> Json:
    return {"description": description, "content": json_content(ref(schema_name))}


def text(description: str, media_type: str = "text/plain") -> Json:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def errors(*codes: str) -> dict[str, Json]:
    """One response per HTTP status the codes map to, each listing its codes (and `internal`)."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *ALWAYS)):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    return {str(status): _error_response(codes_here) for status, codes_here in sorted(by_status.items())}


def method_not_allowed() -> Json:
    response = _error_response(["method_not_allowed"])
    response["headers"] = {
        "Allow": {"required": True, "description": "The methods this path has.", "schema": {"type": "string"}}
    }
    return response


def audio_responses(content_types: Iterable[str], *codes: str) -> dict[str, Json]:
    """200 whole, 206 one range, 416 a range past the end: what `views.media.serve_object` answers."""
    responses = errors(*codes, "range_not_satisfiable")
    audio = {ct: {"schema": {"type": "string", "contentMediaType": ct}} for ct in content_types}
    ranges = {"Accept-Ranges": {"required": True, "schema": {"const": "bytes"}}}
    content_range = {
        "required": True,
        "description": "`bytes <first>-<last>/<size>` (206) or `bytes */<size>` (416).",
        "schema": {"type": "string", "pattern": r"^bytes (\d+-\d+|\*)/\d+$"},
    }
    responses["416"]["headers"] = {"Content-Range": content_range}  # the range started past the end
    return {
        "200": {"description": "The whole file.", "headers": ranges, "content": audio},
        "206": {
            "description": "The requested byte range (`Range: bytes=…`); an unparsable Range is ignored.",
            "headers": {**ranges, "Content-Range": content_range},
            "content": audio,
        },
        **responses,
    }


def _error_response(codes: list[str]) -> Json:
    status = ERRORS[codes[0]][0]
    response: Json = {
        "description": "; ".join(f"`{code}`: {ERRORS[code][1]}" for code in codes),
        "content": json_content(error_schema(codes)),
        "x-error-codes": codes,
    }
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {
                "required": True,
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    return response
