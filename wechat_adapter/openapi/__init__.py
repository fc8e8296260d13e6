"""The HTTP API as an OpenAPI 3.1 document, built from the registries the server itself uses.

`build_document` assembles it from three modules:

- `schemas`: the component schemas (Session, Voice, Preset, Task, Error, ...), with limits from
  `Settings` and `wechat_adapter.fields`, statuses from `events.records`, presets from
  `common.presets` and id patterns from `common.ids`;
- `responses`: success, audio and error responses, the errors grouped by the status
  `errors.ERRORS` gives each code;
- `paths`: every route's operations and parameters, the tags that group them, the security
  schemes they name, and the document's `info` (the audio stream's formats from
  `wechat_adapter.listening`).

Nothing here imports the views: the rules they enforce live in `wechat_adapter.fields`, so the
document cannot drift from the server without tests/test_openapi.py noticing.
"""

from __future__ import annotations

import copy

from common.config import Settings
from wechat_adapter.openapi.paths import INFO, OPENAPI_VERSION, SECURITY_SCHEMES, TAGS, paths
from wechat_adapter.openapi.responses import method_not_allowed
from wechat_adapter.openapi.schemas import Json, schemas


def build_document(public_base_url: str | None = None, settings: Settings | None = None) -> Json:
    """The whole document; `public_base_url` becomes its server, `settings` its limits (defaults)."""
    settings = settings or Settings()
    document: Json = {
        "openapi": OPENAPI_VERSION,
        "info": INFO,
        "paths": paths(),
        "components": {
            "securitySchemes": SECURITY_SCHEMES,
            "schemas": schemas(settings),
            "responses": {"MethodNotAllowed": method_not_allowed()},
        },
        "tags": [{"name": name, "description": description} for name, description in TAGS.items()],
    }
    if public_base_url:
        document["servers"] = [{"url": public_base_url.rstrip("/")}]
    # Parts are shared module constants; a caller that edits its copy (schemathesis does) must not
    # change the next one.
    return copy.deepcopy(document)
