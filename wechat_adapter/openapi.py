"""The HTTP API as an OpenAPI 3.1 document, built from the registries the server itself uses.

Error codes and their statuses come from `errors.ERRORS`, statuses from `events.records`, presets from
`common.presets`, limits from `Settings` and the views' own constants: the document cannot drift from
the server without tests/test_openapi.py noticing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from common.audio import CONTENT_TYPES
from common.config import Settings
from common.presets import PRESETS, PresetKind
from events.records import TaskStatus, VoiceStatus
from wechat_adapter.errors import ERRORS
from wechat_adapter.intake import MAX_SPEECH_S, MIN_SPEECH_S
from wechat_adapter.middleware import LINK_MAX_AGE_S
from wechat_adapter.submission import IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_MAX_CHARS
from wechat_adapter.views import syntheses, voices
from wechat_adapter.views.demo import CONTENT_TYPES as DEMO_CONTENT_TYPES
from wechat_adapter.views.session import MAX_CODE_CHARS as SESSION_CODE_MAX_CHARS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
# Ids are `new_id()`: a prefix, "_", then 26 lowercase base32 characters.
VOICE_ID_PATTERN = "^v_[a-z2-7]{26}$"
TASK_ID_PATTERN = "^t_[a-z2-7]{26}$"
# Every response of every route may be this: error_middleware turns any unexpected failure into it.
ALWAYS = ("internal",)
# What reading any JSON body can fail with (a body over the app's client_max_size is a 413).
JSON_BODY = ("unsupported_media_type", "invalid_json", "audio_too_large")

Json = dict[str, Any]


def build_document(public_base_url: str | None = None, settings: Settings | None = None) -> Json:
    """The whole document; `public_base_url` becomes its server, `settings` its limits (defaults)."""
    settings = settings or Settings()
    document: Json = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "VoiceRelay",
            "version": API_VERSION,
            "summary": "声音克隆语音合成后端（微信小程序）/ Voice-cloning speech for WeChat mini programs",
            "description": _INFO_DESCRIPTION,
        },
        "paths": _paths(),
        "components": {
            "securitySchemes": _SECURITY_SCHEMES,
            "schemas": _schemas(settings),
            "responses": {"MethodNotAllowed": _method_not_allowed()},
        },
        "tags": [{"name": name, "description": description} for name, description in _TAGS.items()],
    }
    if public_base_url:
        document["servers"] = [{"url": public_base_url.rstrip("/")}]
    # Parts are shared module constants; a caller that edits its copy (schemathesis does) must not
    # change the next one.
    return copy.deepcopy(document)


_INFO_DESCRIPTION = (
    'The contract of CONTRACT.md §3. Every error is `{"error": {"code", "message"}}`: `code` is '
    "stable snake_case (see the `ErrorCode` schema), `message` zh-CN text fit for a toast; each "
    "response lists the codes it can carry in `x-error-codes`. A 429 or 503 error carries "
    "`Retry-After`. An unknown path answers 404 `not_found`; a known path with another method 405 "
    "`method_not_allowed` with `Allow`. Any request may send `X-Trace-Id` (8–64 characters of "
    "`[A-Za-z0-9_-]`) to tag the server's logs and events; other values are replaced, never refused."
)

_TAGS = {
    "session": "wx.login code → bearer token",
    "voices": "voice samples to clone",
    "syntheses": "synthesis tasks and their audio",
    "presets": "dialect, emotion, speed and volume presets for `instruct`",
    "wechat": "called by WeChat's servers, not by clients",
    "demo": "the H5 demo page",
    "service": "health, readiness, metrics and this document",
}

_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The `token` from POST /v1/session; expires after `expires_in` seconds.",
    },
    "signedLink": {
        "type": "apiKey",
        "in": "query",
        "name": "sig",
        "description": (
            "Audio routes only: the signed `sig` of an `audio_url` (players cannot set headers). "
            f"Valid for {LINK_MAX_AGE_S} s, for that one resource."
        ),
    },
}
BEARER = [{"bearer": []}]
BEARER_OR_LINK = [{"bearer": []}, {"signedLink": []}]
PUBLIC: list[Json] = []


# --- schemas --------------------------------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(settings: Settings) -> Json:
    return {
        "ErrorCode": _error_code_schema(),
        "Error": _error_schema(ERRORS),
        "SessionRequest": {
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": SESSION_CODE_MAX_CHARS,
                    "pattern": r"\S",
                    "description": "The `code` from wx.login (single use, valid ~5 minutes).",
                }
            },
        },
        "Session": _object(
            token={"type": "string", "description": "Send as `Authorization: Bearer <token>`."},
            expires_in={
                "type": "integer",
                "minimum": 1,
                "description": f"Seconds the token stays valid ({settings.session_ttl_s} by default).",
            },
            openid={"type": "string", "description": "The user's openid in this mini program."},
        ),
        "VoiceUploadForm": _voice_upload_form(settings),
        "VoiceUploadJson": _voice_upload_json(settings),
        "Voice": _object(
            voice_id={"type": "string", "pattern": VOICE_ID_PATTERN},
            name={"type": "string", "minLength": 1, "maxLength": voices.NAME_MAX_CHARS},
            status=_enum(VoiceStatus, "`pending_review` until WeChat's audio check answers."),
            duration_s={"type": "number", "minimum": MIN_SPEECH_S, "maximum": MAX_SPEECH_S},
            prompt_text={"type": "string", "minLength": 1, "maxLength": settings.text_max_chars},
            created_at={"type": "string", "format": "date-time"},
            audio_url={
                "type": "string",
                "format": "uri",
                "description": "The stored sample, signed: hand it to InnerAudioContext for A/B listening.",
            },
        ),
        "VoiceList": _object(voices={"type": "array", "items": _ref("Voice")}),
        "Preset": _object(
            id={"type": "string", "enum": [p.id for p in PRESETS]},
            name={"type": "string", "description": "zh-CN, shown to users"},
            kind=_enum(PresetKind),
        ),
        "PresetList": _object(
            presets={
                "type": "array",
                "items": _ref("Preset"),
                "minItems": len(PRESETS),
                "maxItems": len(PRESETS),
            }
        ),
        "SynthesisRequest": _synthesis_request(settings),
        "Task": _task_schema(settings),
        "TaskList": _object(
            tasks={"type": "array", "items": _ref("Task"), "maxItems": syntheses.LIST_LIMIT_MAX}
        ),
        "Health": _object(status={"const": "ok"}),
        "DemoConfig": _object(
            dev_login={
                "type": "boolean",
                "description": "Whether made-up login codes work (only against the WeChat emulator).",
            },
            text_max_chars={"type": "integer", "minimum": 1},
            upload_max_bytes={"type": "integer", "minimum": 1},
        ),
        "Readiness": _object(
            status={"enum": ["ready", "unavailable"]},
            checks=_object(nats={"type": "boolean"}, s3={"type": "boolean"}),
        ),
    }


def _object(required: Iterable[str] | None = None, **properties: Json) -> Json:
    """A closed object: responses never carry fields this document does not name."""
    return {
        "type": "object",
        "required": list(properties) if required is None else list(required),
        "properties": properties,
        "additionalProperties": False,
    }


def _enum(values: Iterable[str], description: str = "") -> Json:
    schema: Json = {"type": "string", "enum": [str(v) for v in values]}
    if description:
        schema["description"] = description
    return schema


def _error_code_schema() -> Json:
    lines = [f"- `{code}` ({status}): {message}" for code, (status, message) in ERRORS.items()]
    return {
        "type": "string",
        "enum": list(ERRORS),
        "description": "Every error code, with its HTTP status and message:\n" + "\n".join(lines),
    }


def _error_schema(codes: Iterable[str]) -> Json:
    """`{"error": {"code", "message"}}` with `code` limited to `codes`."""
    codes = list(codes)
    code: Json = {"type": "string", "enum": codes}
    if set(codes) == set(ERRORS):
        code = _ref("ErrorCode")
    return _object(error=_object(code=code, message={"type": "string", "minLength": 1}))


def _voice_upload_fields(settings: Settings) -> Json:
    return {
        "prompt_text": {
            "type": "string",
            "minLength": 1,
            "maxLength": settings.text_max_chars,
            "pattern": r"\S",
            "description": "What the sample says (its transcript); checked by WeChat msgSecCheck.",
        },
        "name": {
            "type": "string",
            "maxLength": voices.NAME_MAX_CHARS,
            "pattern": r"^$|\S",
            "description": f"Shown in lists; empty or absent: “{voices.DEFAULT_NAME}”.",
        },
    }


def _voice_upload_form(settings: Settings) -> Json:
    return {
        "type": "object",
        "description": "As wx.uploadFile sends it: `name: 'file'` plus `formData`. Other fields are refused.",
        "required": ["file", "prompt_text"],
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "contentMediaType": "application/octet-stream",
                "description": (
                    f"WAV, MP3, AAC/M4A or Opus/OGG; {MIN_SPEECH_S:g}–{MAX_SPEECH_S:g} s of speech; "
                    f"at most {settings.upload_max_bytes} bytes. The format is read from the content."
                ),
            },
            **_voice_upload_fields(settings),
        },
        "additionalProperties": False,
    }


def _voice_upload_json(settings: Settings) -> Json:
    return {
        "type": "object",
        "description": "For clients without wx.uploadFile (the H5 page). Unknown fields are ignored.",
        "required": ["audio_base64", "prompt_text"],
        "properties": {
            "audio_base64": {
                "type": "string",
                "minLength": 1,
                "contentEncoding": "base64",
                "description": (
                    "The file's bytes in standard base64, or a `data:…;base64,` URL as FileReader makes. "
                    f"At most {settings.upload_max_bytes} bytes decoded."
                ),
            },
            **_voice_upload_fields(settings),
        },
    }


def _synthesis_request(settings: Settings) -> Json:
    preset_ids = [p.id for p in PRESETS]
    return {
        "type": "object",
        "description": "Unknown fields are ignored.",
        "required": ["text", "voice_id"],
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": settings.text_max_chars,
                "pattern": r"\S",
                "description": "Counted after whitespace folding; `<|…|>` model markup is refused.",
            },
            "voice_id": {"type": "string", "pattern": VOICE_ID_PATTERN},
            "mode": {"type": "string", "enum": list(syntheses.MODES), "default": syntheses.MODES[0]},
            "instruct": {
                "type": ["string", "null"],
                "enum": [*preset_ids, None],
                "description": "A preset id from GET /v1/presets: required with mode `instruct`, else unset.",
            },
            "format": {"type": "string", "enum": list(syntheses.FORMATS), "default": syntheses.FORMATS[0]},
            "speed": {
                "type": "number",
                "minimum": syntheses.SPEED_RANGE[0],
                "maximum": syntheses.SPEED_RANGE[1],
                "default": 1.0,
            },
            "notify": {
                "type": "boolean",
                "default": False,
                "description": "Send a subscription message when done (after wx.requestSubscribeMessage).",
            },
        },
        "if": {"required": ["mode"], "properties": {"mode": {"const": "instruct"}}},
        "then": {"required": ["instruct"], "properties": {"instruct": {"type": "string"}}},
        "else": {"properties": {"instruct": {"type": "null"}}},
    }


def _task_schema(settings: Settings) -> Json:
    schema = _object(
        required=["task_id", "status", "text", "voice_id", "mode", "format", "created_at", "updated_at"],
        task_id={"type": "string", "pattern": TASK_ID_PATTERN},
        status=_enum(TaskStatus, "Final: " + ", ".join(f"`{s}`" for s in TaskStatus if s.is_final) + "."),
        text={"type": "string", "minLength": 1, "maxLength": settings.text_max_chars},
        voice_id={"type": "string", "pattern": VOICE_ID_PATTERN},
        mode={"type": "string", "enum": list(syntheses.MODES)},
        instruct={"type": "string", "enum": [p.id for p in PRESETS]},
        format={"type": "string", "enum": list(syntheses.FORMATS)},
        audio_url={
            "type": "string",
            "format": "uri",
            "description": "Only when `succeeded`: a signed absolute URL for InnerAudioContext.",
        },
        duration_s={"type": "number", "minimum": 0, "description": "Only when `succeeded`."},
        error={
            **_object(
                code={"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                message={"type": "string", "minLength": 1},
            ),
            "description": "Why a task failed or was rejected, e.g. `synthesis_failed`, `voice_deleted`.",
        },
        created_at={"type": "string", "format": "date-time"},
        updated_at={"type": "string", "format": "date-time"},
    )
    schema["if"] = {"properties": {"status": {"const": str(TaskStatus.SUCCEEDED)}}}
    schema["then"] = {"required": ["audio_url", "duration_s"]}
    schema["else"] = {"not": {"anyOf": [{"required": ["audio_url"]}, {"required": ["duration_s"]}]}}
    return schema


# --- responses ------------------------------------------------------------------------------------------


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema_name: str) -> Json:
    return {"description": description, "content": _json(_ref(schema_name))}


def _errors(*codes: str) -> dict[str, Json]:
    """One response per HTTP status the codes map to, each listing its codes (and `internal`)."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys((*codes, *ALWAYS)):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    return {str(status): _error_response(codes_here) for status, codes_here in sorted(by_status.items())}


def _error_response(codes: list[str]) -> Json:
    status = ERRORS[codes[0]][0]
    response: Json = {
        "description": "; ".join(f"`{code}`: {ERRORS[code][1]}" for code in codes),
        "content": _json(_error_schema(codes)),
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


def _method_not_allowed() -> Json:
    response = _error_response(["method_not_allowed"])
    response["headers"] = {
        "Allow": {"required": True, "description": "The methods this path has.", "schema": {"type": "string"}}
    }
    return response


def _audio_responses(content_types: Iterable[str], *codes: str) -> dict[str, Json]:
    """200 whole, 206 one range, 416 a range past the end: what `views.media.serve_object` answers."""
    responses = _errors(*codes, "range_not_satisfiable")
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


def _task_event() -> Json:
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": "status"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": _ref("Task")},
        },
    }


def _text(description: str, media_type: str = "text/plain") -> Json:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


# --- parameters -----------------------------------------------------------------------------------------


def _path_id(name: str, pattern: str, what: str) -> Json:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"The {what}'s id. Another user's id, or any unknown one, answers 404 `not_found`.",
        "schema": {"type": "string", "pattern": pattern},
    }


VOICE_ID = _path_id("voice_id", VOICE_ID_PATTERN, "voice")
TASK_ID = _path_id("task_id", TASK_ID_PATTERN, "task")
RANGE = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "One byte range, e.g. `bytes=0-1023` or `bytes=-4096` (RFC 9110).",
    "schema": {"type": "string"},
}
IDEMPOTENCY_KEY = {
    "name": IDEMPOTENCY_HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes retries safe: the same key with the same body answers the first request's task; "
        "with another body 409 `idempotency_conflict`."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_CHARS,
        "pattern": "^[ -~]+$",
    },
}
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "How many of the newest tasks to list.",
    "schema": {
        "type": "integer",
        "minimum": 1,
        "maximum": syntheses.LIST_LIMIT_MAX,
        "default": syntheses.LIST_LIMIT_DEFAULT,
    },
}


# --- paths ----------------------------------------------------------------------------------------------


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Json],
    *,
    security: list[Json] = BEARER,
    parameters: Iterable[Json] = (),
    request_body: Json | None = None,
) -> Json:
    operation: Json = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": dict(sorted(responses.items())),
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if request_body is not None:
        operation["requestBody"] = request_body
    return operation


def _paths() -> Json:
    return {
        **_session_paths(),
        **_voice_paths(),
        **_synthesis_paths(),
        **_wechat_paths(),
        **_demo_paths(),
        **_service_paths(),
    }


def _session_paths() -> Json:
    return {
        "/v1/session": {
            "post": _op(
                "createSession",
                "Trade a wx.login code for a bearer token",
                "session",
                {
                    "200": _ok("Logged in.", "Session"),
                    **_errors(
                        *JSON_BODY,
                        "invalid_request",
                        "invalid_code",
                        "login_forbidden",
                        "rate_limited",
                        "wechat_unavailable",
                    ),
                },
                security=PUBLIC,
                request_body={"required": True, "content": _json(_ref("SessionRequest"))},
            )
        }
    }


def _voice_paths() -> Json:
    upload_codes = (
        "unauthorized",
        *JSON_BODY,
        "invalid_request",
        "text_too_long",
        "text_rejected",
        "audio_invalid",
        "audio_too_short",
        "audio_too_long",
        "audio_silent",
        "audio_clipped",
        "wechat_unavailable",
        "unavailable",
    )
    return {
        "/v1/voices": {
            "post": _op(
                "createVoice",
                "Upload a voice sample (reviewed by WeChat before it can be used)",
                "voices",
                {"201": _ok("Stored, `pending_review`.", "Voice"), **_errors(*upload_codes)},
                request_body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": _ref("VoiceUploadForm")},
                        "application/json": {"schema": _ref("VoiceUploadJson")},
                    },
                },
            ),
            "get": _op(
                "listVoices",
                "The caller's voices",
                "voices",
                {"200": _ok("Newest first.", "VoiceList"), **_errors("unauthorized")},
            ),
        },
        "/v1/voices/{voice_id}": {
            "get": _op(
                "getVoice",
                "One voice",
                "voices",
                {"200": _ok("The voice.", "Voice"), **_errors("unauthorized", "not_found")},
                parameters=[VOICE_ID],
            ),
            "delete": _op(
                "deleteVoice",
                "Delete a voice: its sample, cached features and cached results",
                "voices",
                {
                    "204": {"description": "Gone."},
                    **_errors("unauthorized", "not_found", "unavailable"),
                },
                parameters=[VOICE_ID],
            ),
        },
        "/v1/voices/{voice_id}/audio": {
            "get": _op(
                "getVoiceAudio",
                "The stored (normalised, 16 kHz mono WAV) sample",
                "voices",
                _audio_responses([CONTENT_TYPES["wav"]], "unauthorized", "not_found", "unavailable"),
                security=BEARER_OR_LINK,
                parameters=[VOICE_ID, RANGE],
            )
        },
    }


def _synthesis_paths() -> Json:
    submit_codes = (
        "unauthorized",
        *JSON_BODY,
        "invalid_request",
        "text_empty",
        "text_too_long",
        "text_rejected",
        "not_found",
        "voice_rejected",
        "idempotency_conflict",
        "idempotency_in_progress",
        "rate_limited",
        "wechat_unavailable",
        "overloaded",
        "unavailable",
    )
    return {
        "/v1/syntheses": {
            "post": _op(
                "createSynthesis",
                "Ask for speech in a voice",
                "syntheses",
                {
                    "202": _ok(
                        "Accepted: `queued`, or `awaiting_review` while the voice is reviewed.", "Task"
                    ),
                    "200": _ok("Already finished: an identical earlier request, or a repeated key.", "Task"),
                    **_errors(*submit_codes),
                },
                parameters=[IDEMPOTENCY_KEY],
                request_body={"required": True, "content": _json(_ref("SynthesisRequest"))},
            ),
            "get": _op(
                "listSyntheses",
                "The caller's tasks",
                "syntheses",
                {"200": _ok("Newest first.", "TaskList"), **_errors("unauthorized", "invalid_request")},
                parameters=[LIMIT],
            ),
        },
        "/v1/syntheses/{task_id}": {
            "get": _op(
                "getSynthesis",
                "One task",
                "syntheses",
                {"200": _ok("The task.", "Task"), **_errors("unauthorized", "not_found")},
                parameters=[TASK_ID],
            )
        },
        "/v1/syntheses/{task_id}/audio": {
            "get": _op(
                "getSynthesisAudio",
                "The synthesised audio, in the task's format",
                "syntheses",
                _audio_responses(CONTENT_TYPES.values(), "unauthorized", "not_found", "unavailable"),
                security=BEARER_OR_LINK,
                parameters=[TASK_ID, RANGE],
            )
        },
        "/v1/syntheses/{task_id}/events": {
            "get": _op(
                "followSynthesis",
                "Follow a task's status as server-sent events",
                "syntheses",
                {
                    "200": {
                        "description": (
                            "One `status` event per status change, its `data` the task as JSON; "
                            "`: keep-alive` comments while idle. Ends after a final status."
                        ),
                        # As in OpenAPI 3.2's `itemSchema`, the schema describes one event.
                        "content": {"text/event-stream": {"schema": _task_event()}},
                    },
                    **_errors("unauthorized", "not_found"),
                },
                parameters=[TASK_ID],
            )
        },
        "/v1/presets": {
            "get": _op(
                "listPresets",
                "What `instruct` may name",
                "presets",
                {"200": _ok("Every preset.", "PresetList"), **_errors("unauthorized")},
            )
        },
    }


def _wechat_paths() -> Json:
    signature = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature")
    ]
    refused = _text("The signature, timestamp or message is not WeChat's.")
    return {
        "/wechat/push": {
            "get": _op(
                "verifyPushUrl",
                "WeChat's message-push URL verification",
                "wechat",
                {"200": _text("`echostr`, echoed."), "403": refused, **_errors()},
                security=PUBLIC,
                parameters=signature,
            ),
            "post": _op(
                "receivePush",
                "A WeChat message push (JSON or XML, plain or safe mode), e.g. `wxa_media_check`",
                "wechat",
                {"200": _text("`success`"), "403": refused, **_errors()},
                security=PUBLIC,
                parameters=signature,
                request_body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/xml": {"schema": {"type": "string"}},
                        "application/xml": {"schema": {"type": "string"}},
                    },
                },
            ),
        },
        "/wechat/media/{token}": {
            "get": _op(
                "getMediaForCheck",
                "A voice sample as WeChat's mediaCheckAsync downloads it",
                "wechat",
                _audio_responses([CONTENT_TYPES["wav"]], "not_found", "unavailable"),
                security=PUBLIC,
                parameters=[
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "description": f"The signed, expiring link (valid {voices.MEDIA_LINK_MAX_AGE_S} s).",
                        "schema": {"type": "string"},
                    },
                    RANGE,
                ],
            )
        },
    }


def _demo_paths() -> Json:
    page_headers = {
        name: {"required": True, "schema": {"type": "string"}}
        for name in ("ETag", "Content-Security-Policy", "Cache-Control")
    }
    if_none_match = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "The `ETag` of a copy the browser holds.",
        "schema": {"type": "string"},
    }

    def page_file(description: str, content_types: Iterable[str]) -> dict[str, Json]:
        content = {ct: {"schema": {"type": "string"}} for ct in content_types}
        return {
            "200": {"description": description, "headers": page_headers, "content": content},
            "304": {"description": "Not modified since the `If-None-Match` copy.", "headers": page_headers},
        }

    scripts_and_styles = [ct for ct in DEMO_CONTENT_TYPES.values() if ct != "text/html"]
    return {
        "/demo": {
            "get": _op(
                "demoRedirect",
                "To the H5 page",
                "demo",
                {
                    "308": {
                        "description": "To `/demo/`.",
                        "headers": {"Location": {"required": True, "schema": {"const": "/demo/"}}},
                    },
                    **_errors(),
                },
                security=PUBLIC,
            )
        },
        "/demo/": {
            "get": _op(
                "demoPage",
                "The H5 page",
                "demo",
                {**page_file("The page.", ["text/html"]), **_errors()},
                security=PUBLIC,
                parameters=[if_none_match],
            )
        },
        "/demo/config.json": {
            "get": _op(
                "demoConfig",
                "What the H5 page needs to know about this gateway",
                "demo",
                {"200": _ok("The page's configuration.", "DemoConfig"), **_errors()},
                security=PUBLIC,
            )
        },
        "/demo/{asset}": {
            "get": _op(
                "demoAsset",
                "One of the H5 page's scripts or style sheets",
                "demo",
                {**page_file("The file.", scripts_and_styles), **_errors("not_found")},
                security=PUBLIC,
                parameters=[
                    {
                        "name": "asset",
                        "in": "path",
                        "required": True,
                        "description": "A file name the page links to, e.g. `app.js`, `style.css`.",
                        "schema": {"type": "string"},
                    },
                    if_none_match,
                ],
            )
        },
    }


def _service_paths() -> Json:
    return {
        "/healthz": {
            "get": _op(
                "healthz",
                "Liveness",
                "service",
                {"200": _ok("Alive.", "Health"), **_errors()},
                security=PUBLIC,
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness: NATS connected and the S3 bucket answering",
                "service",
                {"200": _ok("Ready.", "Readiness"), "503": _ok("Not ready.", "Readiness"), **_errors()},
                security=PUBLIC,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                "service",
                {"200": _text("Prometheus text format."), **_errors()},
                security=PUBLIC,
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                "service",
                {"200": {"description": "OpenAPI 3.1.", "content": _json({"type": "object"})}, **_errors()},
                security=PUBLIC,
            )
        },
    }
