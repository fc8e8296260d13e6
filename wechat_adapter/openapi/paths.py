"""The document's paths: every route's operations, their parameters and how each is authenticated,
with the tags that group them, the security schemes they name, and the document's `info`.

Operations list the error codes they can answer with; `responses.errors()` turns those into
responses. The router and this file are kept in step by tests/test_openapi.py.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.audio import CONTENT_TYPES
from events.records import TaskStatus
from wechat_adapter.fields import (
    DEMO_CONTENT_TYPES,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX_CHARS,
    LINK_MAX_AGE_S,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    MEDIA_LINK_MAX_AGE_S,
)
from wechat_adapter.listening import STREAM_FORMATS
from wechat_adapter.openapi.responses import JSON_BODY, audio_responses, errors, json_content, ok, text
from wechat_adapter.openapi.schemas import TASK_ID_PATTERN, VOICE_ID_PATTERN, Json, ref, task_event

OPENAPI_VERSION = "3.1.0"

_INFO_DESCRIPTION = (
    "VoiceRelay's HTTP API: sessions, voice samples, synthesis tasks and their audio. Every error is "
    '`{"error": {"code", "message"}}`: `code` is stable snake_case (see the `ErrorCode` schema), '
    "`message` zh-CN text fit for a toast; each response lists the codes it can carry in "
    "`x-error-codes`. A 429 or 503 error carries `Retry-After`. An unknown path answers 404 "
    "`not_found`; a known path with another method 405 `method_not_allowed` with `Allow`. Any request "
    "may send `X-Trace-Id` (8–64 characters of `[A-Za-z0-9_-]`) to tag the server's logs and events; "
    "other values are replaced, never refused."
)

INFO = {
    "title": "VoiceRelay",
    "version": "1.0.0",
    "summary": "声音克隆语音合成后端（微信小程序）/ Voice-cloning speech for WeChat mini programs",
    "description": _INFO_DESCRIPTION,
}

TAGS = {
    "session": "wx.login code → bearer token",
    "voices": "voice samples to clone",
    "syntheses": "synthesis tasks and their audio",
    "presets": "dialect, emotion, speed and volume presets for `instruct`",
    "wechat": "called by WeChat's servers, not by clients",
    "demo": "the H5 demo page",
    "service": "health, readiness, metrics and this document",
}

SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "The `token` from POST /v1/session; expires after `expires_in` seconds, or once revoked "
            "(DELETE /v1/session, or a login WeChat refuses as high-risk while sending this token). "
            "When revocation cannot be checked the call answers 503 `unavailable`."
        ),
    },
    "signedLink": {
        "type": "apiKey",
        "in": "query",
        "name": "sig",
        "description": (
            "Audio routes only: the signed `sig` of an `audio_url` or a task's `stream_url` (players "
            f"cannot set headers). Valid for {LINK_MAX_AGE_S} s, for that one resource."
        ),
    },
}
BEARER = [{"bearer": []}]
BEARER_OR_LINK = [{"bearer": []}, {"signedLink": []}]
PUBLIC: list[Json] = []


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
STREAM_FORMAT = {
    "name": "format",
    "in": "query",
    "required": False,
    "description": (
        "`mp3`: MP3 frames, encoded as the audio comes; `pcm`: raw s16le mono samples at the rate "
        "`X-Audio-Sample-Rate` gives (for WebAudioContext). Any other value answers 400 `invalid_request`."
    ),
    "schema": {"type": "string", "enum": list(STREAM_FORMATS), "default": STREAM_FORMATS[0]},
}
STREAM_CONTENT_TYPES = {"mp3": "audio/mpeg", "pcm": "application/octet-stream"}
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "description": "How many of the newest tasks to list.",
    "schema": {
        "type": "integer",
        "minimum": 1,
        "maximum": LIST_LIMIT_MAX,
        "default": LIST_LIMIT_DEFAULT,
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


def paths() -> Json:
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
                    "200": ok("Logged in.", "Session"),
                    **errors(
                        *JSON_BODY,
                        "invalid_request",
                        "invalid_code",
                        "login_forbidden",
                        "rate_limited",
                        "wechat_unavailable",
                    ),
                },
                security=PUBLIC,
                request_body={"required": True, "content": json_content(ref("SessionRequest"))},
            ),
            "delete": _op(
                "deleteSession",
                "Log out: revoke this bearer token",
                "session",
                {
                    "204": {
                        "description": (
                            "Revoked: later calls with this token answer 401 `unauthorized` (on every "
                            "gateway instance within seconds); the user's other tokens keep working."
                        )
                    },
                    **errors("unauthorized", "unavailable"),
                },
            ),
        },
        "/v1/me": {
            "delete": _op(
                "deleteMe",
                "Erase everything of the caller (the right to erasure)",
                "session",
                {
                    "204": {
                        "description": (
                            "Erased: every voice, sample, cached feature, output, task, cached result and "
                            "idempotency entry of the caller is gone, every token of theirs is revoked "
                            "(401 from now on; logging in again starts an empty account), every signed "
                            "link answers 404, and the texts in their events on the audit log can no "
                            "longer be read (`[erased]`). Takes a few seconds: it sweeps twice, the "
                            "second time after every gateway instance has seen the revocation."
                        )
                    },
                    **errors("unauthorized", "unavailable"),
                },
            ),
        },
    }


def _voice_paths() -> Json:
    upload_codes = (
        "unauthorized",
        # Its JSON form is read like any JSON body, up to the upload's own limit.
        "unsupported_media_type",
        "invalid_json",
        "audio_too_large",
        "invalid_request",
        "consent_required",
        "voice_limit_reached",
        "rate_limited",
        "overloaded",
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
                {"201": ok("Stored, `pending_review`.", "Voice"), **errors(*upload_codes)},
                request_body={
                    "required": True,
                    "content": {
                        "multipart/form-data": {"schema": ref("VoiceUploadForm")},
                        "application/json": {"schema": ref("VoiceUploadJson")},
                    },
                },
            ),
            "get": _op(
                "listVoices",
                "The caller's voices",
                "voices",
                {"200": ok("Newest first.", "VoiceList"), **errors("unauthorized")},
            ),
        },
        "/v1/voices/{voice_id}": {
            "get": _op(
                "getVoice",
                "One voice",
                "voices",
                {"200": ok("The voice.", "Voice"), **errors("unauthorized", "not_found")},
                parameters=[VOICE_ID],
            ),
            "delete": _op(
                "deleteVoice",
                "Delete a voice: its sample, cached features and cached results",
                "voices",
                {
                    "204": {"description": "Gone."},
                    **errors("unauthorized", "not_found", "unavailable"),
                },
                parameters=[VOICE_ID],
            ),
        },
        "/v1/voices/{voice_id}/audio": {
            "get": _op(
                "getVoiceAudio",
                "The stored sample (normalised mono WAV, 24 kHz or the upload's lower rate, at least 16 kHz)",
                "voices",
                audio_responses([CONTENT_TYPES["wav"]], "unauthorized", "not_found", "unavailable"),
                security=BEARER_OR_LINK,
                parameters=[VOICE_ID, RANGE],
            )
        },
    }


def _synthesis_paths() -> Json:
    submit_codes = (
        "unauthorized",
        *JSON_BODY,
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
    # The audio stream holds one of the caller's stream slots, like the SSE route.
    stream_codes = ("unauthorized", "invalid_request", "not_found", "too_many_streams", "overloaded")
    return {
        "/v1/syntheses": {
            "post": _op(
                "createSynthesis",
                "Ask for speech in a voice",
                "syntheses",
                {
                    "202": ok(
                        "Accepted: `queued`, or `awaiting_review` while the voice is reviewed.", "Task"
                    ),
                    "200": ok("Already finished: an identical earlier request, or a repeated key.", "Task"),
                    **errors(*submit_codes),
                },
                parameters=[IDEMPOTENCY_KEY],
                request_body={"required": True, "content": json_content(ref("SynthesisRequest"))},
            ),
            "get": _op(
                "listSyntheses",
                "The caller's tasks",
                "syntheses",
                {"200": ok("Newest first.", "TaskList"), **errors("unauthorized", "invalid_request")},
                parameters=[LIMIT],
            ),
        },
        "/v1/syntheses/{task_id}": {
            "get": _op(
                "getSynthesis",
                "One task",
                "syntheses",
                {"200": ok("The task.", "Task"), **errors("unauthorized", "not_found")},
                parameters=[TASK_ID],
            )
        },
        "/v1/syntheses/{task_id}/audio": {
            "get": _op(
                "getSynthesisAudio",
                "The synthesised audio, in the task's format",
                "syntheses",
                audio_responses(CONTENT_TYPES.values(), "unauthorized", "not_found", "unavailable"),
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
                        "content": {"text/event-stream": {"schema": task_event()}},
                    },
                    **errors("unauthorized", "not_found", "too_many_streams", "overloaded"),
                },
                parameters=[TASK_ID],
            )
        },
        "/v1/syntheses/{task_id}/stream": {
            "get": _op(
                "streamSynthesis",
                "Listen to a task's audio while it is synthesised",
                "syntheses",
                {"200": _stream_response(), **errors(*stream_codes)},
                security=BEARER_OR_LINK,
                parameters=[TASK_ID, STREAM_FORMAT],
            )
        },
        "/v1/stream": {
            "get": _op(
                "streamSocket",
                "A WebSocket that synthesises and streams: wx.connectSocket's binary frames",
                "syntheses",
                {
                    "101": _socket_response(),
                    **errors("invalid_request", "unauthorized", "too_many_streams", "overloaded"),
                },
            )
        },
        "/v1/presets": {
            "get": _op(
                "listPresets",
                "What `instruct` may name",
                "presets",
                {"200": ok("Every preset.", "PresetList"), **errors("unauthorized")},
            )
        },
    }


def _socket_response() -> Json:
    """101 of GET /v1/stream: the messages of the WebSocket (wechat_adapter/views/stream_socket.py)."""
    return {
        "description": (
            "Switching to a WebSocket, authenticated by the `Authorization` header (wx.connectSocket's "
            "`header` option); it holds one of the caller's stream slots while open. Send text frames "
            '`{"type": "synthesize", …the fields of POST /v1/syntheses…, "stream_format"?: "pcm"|"mp3" '
            '(default pcm), "idempotency_key"?}`, one after another (up to 4 may be sent ahead of the '
            "answers; more closes the socket with 1008). "
            "Each goes through the checks of POST /v1/syntheses and is answered by "
            '`{"type": "task", "task"}`, `{"type": "audio", "format", "sample_rate_hz"}`, binary frames '
            '(s16le mono PCM, or MP3 frames), then `{"type": "end", "task", "complete"}` '
            "(`complete` false: cut short by a redelivered job; play `task.audio_url`), or by "
            '`{"type": "error", "error": {"code", "message"}}` with the codes of POST /v1/syntheses; '
            "the socket stays open after an error. The server pings every 25 s; it closes the socket "
            "with code 4000 after 120 s without a request, and with 4001 when the client reads nothing "
            "for 30 s."
        )
    }


def _stream_response() -> Json:
    """200 of GET /v1/syntheses/{task_id}/stream: chunked audio from the first sample, whatever the
    task's state (wechat_adapter/listening.py)."""
    content = {
        media_type: {"schema": {"type": "string", "contentMediaType": media_type}}
        for media_type in (STREAM_CONTENT_TYPES[f] for f in STREAM_FORMATS)
    }
    return {
        "description": (
            "The task's audio from its first sample, chunked; the response starts with the first audio "
            "and ends with the last, the audible AIGC label included, exactly as in the stored file. "
            "`Content-Type` follows `format`: `audio/mpeg` or `application/octet-stream` (s16le mono). "
            "Queued, under review or running: the audio as the worker makes it (the chunks are kept "
            "10 minutes, so a late or reconnecting listener still hears it from the start). Succeeded: "
            "the stored file's whole audio at once. Failed or rejected: an empty body (the task says "
            "why). A job redelivered (its worker died, or it is retried after an error): when none of "
            "the earlier attempt's audio was heard, the new attempt's audio; else the stream ends "
            "early (cut short), and the task's `audio_url` has the whole file once it succeeds. The "
            "stream holds one of the "
            "caller's stream slots, like GET /v1/syntheses/{task_id}/events, and ends when the "
            "gateway stops or after the streams' lifetime bound."
        ),
        "headers": {
            "X-Task-Status": {
                "required": True,
                "description": "The task's status when the stream began.",
                "schema": {"type": "string", "enum": [str(s) for s in TaskStatus]},
            },
            "X-Audio-Sample-Rate": {
                "required": False,
                "description": (
                    "Samples per second of the audio (Hz); what a `pcm` client plays it at. Absent on "
                    "an empty body."
                ),
                "schema": {"type": "integer", "minimum": 1},
            },
            "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
        },
        "content": content,
    }


def _wechat_paths() -> Json:
    signature = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("signature", "timestamp", "nonce", "echostr", "encrypt_type", "msg_signature")
    ]
    refused = text("The signature, timestamp or message is not WeChat's.")
    return {
        "/wechat/push": {
            "get": _op(
                "verifyPushUrl",
                "WeChat's message-push URL verification",
                "wechat",
                {"200": text("`echostr`, echoed."), "403": refused, **errors()},
                security=PUBLIC,
                parameters=signature,
            ),
            "post": _op(
                "receivePush",
                "A WeChat message push (JSON or XML, plain or safe mode), e.g. `wxa_media_check`",
                "wechat",
                {"200": text("`success`"), "403": refused, **errors()},
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
                audio_responses([CONTENT_TYPES["wav"]], "not_found", "unavailable"),
                security=PUBLIC,
                parameters=[
                    {
                        "name": "token",
                        "in": "path",
                        "required": True,
                        "description": f"The signed, expiring link (valid {MEDIA_LINK_MAX_AGE_S} s).",
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
                    **errors(),
                },
                security=PUBLIC,
            )
        },
        "/demo/": {
            "get": _op(
                "demoPage",
                "The H5 page",
                "demo",
                {**page_file("The page.", ["text/html"]), **errors()},
                security=PUBLIC,
                parameters=[if_none_match],
            )
        },
        "/demo/config.json": {
            "get": _op(
                "demoConfig",
                "What the H5 page needs to know about this gateway",
                "demo",
                {"200": ok("The page's configuration.", "DemoConfig"), **errors()},
                security=PUBLIC,
            )
        },
        "/demo/{asset}": {
            "get": _op(
                "demoAsset",
                "One of the H5 page's scripts or style sheets",
                "demo",
                {**page_file("The file.", scripts_and_styles), **errors("not_found")},
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
                {"200": ok("Alive.", "Health"), **errors()},
                security=PUBLIC,
            )
        },
        "/readyz": {
            "get": _op(
                "readyz",
                "Readiness: NATS connected and the S3 bucket answering",
                "service",
                {"200": ok("Ready.", "Readiness"), "503": ok("Not ready.", "Readiness"), **errors()},
                security=PUBLIC,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus metrics",
                "service",
                {"200": text("Prometheus text format."), **errors()},
                security=PUBLIC,
            )
        },
        "/openapi.json": {
            "get": _op(
                "openapi",
                "This document",
                "service",
                {
                    "200": {"description": "OpenAPI 3.1.", "content": json_content({"type": "object"})},
                    **errors(),
                },
                security=PUBLIC,
            )
        },
    }
