"""The document's component schemas (`#/components/schemas/…`): sessions, voices, presets, tasks, errors.

Limits come from `Settings` and `wechat_adapter.fields`, statuses from `events.records`, presets from
`common.presets`, error codes from `errors.ERRORS`, id patterns from `common.ids`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.config import Settings
from common.ids import id_pattern
from common.presets import PRESETS, PresetKind
from common.vocabulary import AIGC_LABELS
from events.records import TaskStatus, VoiceStatus
from wechat_adapter.errors import ERRORS
from wechat_adapter.fields import (
    CONSENT_UNRECORDED,
    CONSENTS,
    DEFAULT_NAME,
    FORMATS,
    LIST_LIMIT_MAX,
    MAX_CODE_CHARS,
    MAX_SPEECH_S,
    MIN_SPEECH_S,
    MODES,
    NAME_MAX_CHARS,
    SPEED_RANGE,
)

Json = dict[str, Any]

VOICE_ID_PATTERN = id_pattern("v")
TASK_ID_PATTERN = id_pattern("t")


def ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def closed_object(required: Iterable[str] | None = None, **properties: Json) -> Json:
    """A closed object: responses never carry fields this document does not name."""
    return {
        "type": "object",
        "required": list(properties) if required is None else list(required),
        "properties": properties,
        "additionalProperties": False,
    }


def schemas(settings: Settings) -> Json:
    return {
        "ErrorCode": _error_code_schema(),
        "Error": error_schema(ERRORS),
        "SessionRequest": {
            "type": "object",
            "required": ["code"],
            "properties": {
                "code": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_CODE_CHARS,
                    "pattern": r"\S",
                    "description": "The `code` from wx.login (single use, valid ~5 minutes).",
                }
            },
        },
        "Session": closed_object(
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
        "Voice": closed_object(
            voice_id={"type": "string", "pattern": VOICE_ID_PATTERN},
            name={"type": "string", "minLength": 1, "maxLength": NAME_MAX_CHARS},
            status=_enum(VoiceStatus, "`pending_review` until WeChat's audio check answers."),
            duration_s={"type": "number", "minimum": MIN_SPEECH_S, "maximum": MAX_SPEECH_S},
            prompt_text={"type": "string", "minLength": 1, "maxLength": settings.text_max_chars},
            created_at={"type": "string", "format": "date-time"},
            consent={
                "type": "string",
                "enum": [*CONSENTS, CONSENT_UNRECORDED],
                "description": (
                    "The speaker's consent given at upload: `self` or `authorized`; "
                    f"`{CONSENT_UNRECORDED}` for a voice uploaded before consent was asked."
                ),
            },
            audio_url={
                "type": "string",
                "format": "uri",
                "description": "The stored sample, signed: hand it to InnerAudioContext for A/B listening.",
            },
        ),
        "VoiceList": closed_object(voices={"type": "array", "items": ref("Voice")}),
        "Preset": closed_object(
            id={"type": "string", "enum": [p.id for p in PRESETS]},
            name={"type": "string", "description": "zh-CN, shown to users"},
            kind=_enum(PresetKind),
        ),
        "PresetList": closed_object(
            presets={
                "type": "array",
                "items": ref("Preset"),
                "minItems": len(PRESETS),
                "maxItems": len(PRESETS),
            }
        ),
        "SynthesisRequest": _synthesis_request(settings),
        "Task": _task_schema(settings),
        "TaskList": closed_object(tasks={"type": "array", "items": ref("Task"), "maxItems": LIST_LIMIT_MAX}),
        "Health": closed_object(status={"const": "ok"}),
        "DemoConfig": closed_object(
            dev_login={
                "type": "boolean",
                "description": "Whether made-up login codes work (only against the WeChat emulator).",
            },
            text_max_chars={"type": "integer", "minimum": 1},
            upload_max_bytes={"type": "integer", "minimum": 1},
        ),
        "Readiness": closed_object(
            status={"enum": ["ready", "unavailable"]},
            checks=closed_object(
                nats={"type": "boolean"}, s3={"type": "boolean"}, consumers={"type": "boolean"}
            ),
            # Each background consumer or task of the gateway by name: whether it is alive.
            consumers={"type": "object", "additionalProperties": {"type": "boolean"}},
        ),
    }


def error_schema(codes: Iterable[str]) -> Json:
    """`{"error": {"code", "message"}}` with `code` limited to `codes`."""
    codes = list(codes)
    code: Json = {"type": "string", "enum": codes}
    if set(codes) == set(ERRORS):
        code = ref("ErrorCode")
    return closed_object(error=closed_object(code=code, message={"type": "string", "minLength": 1}))


def task_event() -> Json:
    """One server-sent event of GET /v1/syntheses/{task_id}/events."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"const": "status"},
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": ref("Task")},
        },
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
            "maxLength": NAME_MAX_CHARS,
            "pattern": r"^$|\S",
            "description": f"Shown in lists; empty or absent: “{DEFAULT_NAME}”.",
        },
        "consent": {
            "type": "string",
            "enum": list(CONSENTS),
            "description": (
                "The speaker's consent (《深度合成管理规定》第十四条): `self`, the uploader is the speaker; "
                "`authorized`, the speaker has given separate consent. Absent: `consent_required`."
            ),
        },
    }


def _voice_upload_form(settings: Settings) -> Json:
    return {
        "type": "object",
        "description": "As wx.uploadFile sends it: `name: 'file'` plus `formData`. Other fields are refused.",
        "required": ["file", "prompt_text", "consent"],
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
        "required": ["audio_base64", "prompt_text", "consent"],
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
            "mode": {"type": "string", "enum": list(MODES), "default": MODES[0]},
            "instruct": {
                "type": ["string", "null"],
                "enum": [*preset_ids, None],
                "description": "A preset id from GET /v1/presets: required with mode `instruct`, else unset.",
            },
            "format": {"type": "string", "enum": list(FORMATS), "default": FORMATS[0]},
            "speed": {
                "type": "number",
                "minimum": SPEED_RANGE[0],
                "maximum": SPEED_RANGE[1],
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
    schema = closed_object(
        required=[
            "task_id",
            "status",
            "text",
            "voice_id",
            "mode",
            "format",
            "stream_url",
            "created_at",
            "updated_at",
        ],
        task_id={"type": "string", "pattern": TASK_ID_PATTERN},
        status=_enum(TaskStatus, "Final: " + ", ".join(f"`{s}`" for s in TaskStatus if s.is_final) + "."),
        text={"type": "string", "minLength": 1, "maxLength": settings.text_max_chars},
        voice_id={"type": "string", "pattern": VOICE_ID_PATTERN},
        mode={"type": "string", "enum": list(MODES)},
        instruct={"type": "string", "enum": [p.id for p in PRESETS]},
        format={"type": "string", "enum": list(FORMATS)},
        audio_url={
            "type": "string",
            "format": "uri",
            "description": "Only when `succeeded`: a signed absolute URL for InnerAudioContext.",
        },
        stream_url={
            "type": "string",
            "format": "uri",
            "description": (
                "Always: a signed absolute URL of GET /v1/syntheses/{task_id}/stream, the audio as it is "
                "synthesised (add `&format=pcm` for raw samples)."
            ),
        },
        duration_s={"type": "number", "minimum": 0, "description": "Only when `succeeded`."},
        aigc_label={
            "type": "string",
            "enum": list(AIGC_LABELS),
            "description": (
                "The audible AIGC label the audio carries (GB 45438-2025): a spoken sentence, the "
                "短长短短 tone pattern, or none. Absent for tasks from before labels were recorded. "
                "Every file also carries the implicit label, metadata field `AIGC` (Annex E)."
            ),
        },
        error={
            **closed_object(
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
