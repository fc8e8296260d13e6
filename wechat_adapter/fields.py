"""The rules of the API's request fields, in one place: the views enforce them and the OpenAPI document
states them.

Plain data, importing nothing from the web side, so `wechat_adapter.openapi` can read the rules
without importing the views that enforce them.
"""

from __future__ import annotations

from common.vocabulary import AUDIO_FORMATS as FORMATS
from common.vocabulary import MODES

__all__ = [
    "CONSENTS",
    "CONSENT_UNRECORDED",
    "DEFAULT_NAME",
    "DEMO_CONTENT_TYPES",
    "FORMATS",
    "IDEMPOTENCY_HEADER",
    "IDEMPOTENCY_KEY_MAX_CHARS",
    "JSON_BODY_MAX_BYTES",
    "LINK_MAX_AGE_S",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "MAX_CODE_CHARS",
    "MAX_SPEECH_S",
    "MEDIA_LINK_MAX_AGE_S",
    "MIN_SPEECH_S",
    "MODES",
    "NAME_MAX_CHARS",
    "SPEED_RANGE",
]

# --- every JSON body ---------------------------------------------------------------------------------

# The largest JSON body accepted, except POST /v1/voices (base64 audio): refused before parsing.
JSON_BODY_MAX_BYTES = 16 * 1024

# --- POST /v1/session ------------------------------------------------------------------------------------

MAX_CODE_CHARS = 128  # the wx.login `code`

# --- POST /v1/voices -------------------------------------------------------------------------------------

NAME_MAX_CHARS = 20
DEFAULT_NAME = "我的声音"  # the name of a voice uploaded with none
MIN_SPEECH_S = 3.0  # seconds of speech in a sample, once silence and pauses are trimmed
MAX_SPEECH_S = 30.0
# `consent` (《深度合成管理规定》第十四条: the speaker's separate consent to editing their voice):
# "self" = the uploader is the speaker; "authorized" = the speaker has given separate consent.
# Required on every upload; a missing one is `consent_required`, any other value `invalid_request`.
CONSENTS = ("self", "authorized")
# What a voice enrolled before consent was asked carries (events.records.VoiceRecord's default).
CONSENT_UNRECORDED = "unrecorded"

# --- POST /v1/syntheses, GET /v1/syntheses ---------------------------------------------------------------

# MODES and FORMATS (the first of each is the default) are common.vocabulary's, imported above.
SPEED_RANGE = (0.5, 2.0)
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 20, 100
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX_CHARS = 255

# --- signed links ---------------------------------------------------------------------------------------

LINK_MAX_AGE_S = 24 * 3600  # `?sig=` of an `audio_url`: an audio player cannot send the bearer token
MEDIA_LINK_MAX_AGE_S = 3 * 3600  # WeChat fetches the sample within 30 minutes of the check

# --- the H5 demo page ------------------------------------------------------------------------------------

# File suffix -> content type of the files served under /demo/.
DEMO_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
