"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1, in agreement with the router and the error
registry, and a property-based run of it against the live gateway finds no server error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import aiohttp
import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web
from hypothesis import strategies as st
from schemathesis import GenerationMode
from stack import SAMPLE_TEXT, Stack, speech_sample

from common.config import Settings
from common.presets import PRESETS
from events.records import TaskStatus, VoiceStatus
from ops.client import ApiClient, eventually
from wechat_adapter.app import create_app
from wechat_adapter.errors import ERRORS
from wechat_adapter.openapi import build_document

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
Operation = tuple[str, str]  # (METHOD, path with its parameters written as "{}")


def operations(document: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method.upper(), normalise(path)): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def normalise(path: str) -> str:
    """`/v1/voices/{voice_id}` and aiohttp's `/v1/voices/{id}` name the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def documented_responses(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, status, response) for every response in the paths and in components."""
    for (method, path), operation in operations(document).items():
        for status, response in operation["responses"].items():
            yield f"{method} {path}", status, response
    for name, response in document["components"]["responses"].items():
        status = ERRORS[response["x-error-codes"][0]][0]
        yield f"components/responses/{name}", str(status), response


# --- the document itself -------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = build_document("http://127.0.0.1:8080/")
    assert document["openapi"].startswith("3.1.")
    assert document["servers"] == [{"url": "http://127.0.0.1:8080"}]
    # Schemathesis checks the whole document against the official OpenAPI 3.1 meta-schema...
    schemathesis.openapi.from_dict(document).validate()
    # ...which does not look inside schemas: each must be valid JSON Schema 2020-12 of its own.
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for where, status, response in documented_responses(document):
        for media_type in response.get("content", {}).values():
            assert jsonschema_rs.meta.is_valid(media_type["schema"]), (where, status)
    # Every operation is named once, and says how it is authenticated.
    ids = [op["operationId"] for op in operations(document).values()]
    assert len(ids) == len(set(ids))
    assert all("security" in op for op in operations(document).values())


def test_document_is_built_from_the_registries_and_settings() -> None:
    document = build_document(settings=Settings(text_max_chars=57, upload_max_bytes=1234))
    schemas = document["components"]["schemas"]
    assert "servers" not in document
    assert schemas["Preset"]["properties"]["id"]["enum"] == [p.id for p in PRESETS]
    assert schemas["Task"]["properties"]["status"]["enum"] == [str(s) for s in TaskStatus]
    assert schemas["Voice"]["properties"]["status"]["enum"] == [str(s) for s in VoiceStatus]
    assert schemas["ErrorCode"]["enum"] == list(ERRORS)
    assert schemas["SynthesisRequest"]["properties"]["text"]["maxLength"] == 57
    assert schemas["VoiceUploadForm"]["properties"]["prompt_text"]["maxLength"] == 57
    assert "1234 bytes" in schemas["VoiceUploadForm"]["properties"]["file"]["description"]


def component_validator(document: dict[str, Any], schema_name: str) -> jsonschema_rs.Validator:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


# --- the document agrees with the server ---------------------------------------------------------------


# The H5 page's scripts and styles are one route each; the document names them together as
# /demo/{asset}, so that adding a file to the page is not a change of the API.
DEMO_ASSET = re.compile(r"^/demo/[^/]+\.(js|css)$")


def served_operations(app: web.Application) -> set[Operation]:
    """What the router answers, less the HEAD twin aiohttp adds to every GET."""
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info()
        path = info.get("path") or info["formatter"]
        served.add((route.method, normalise(DEMO_ASSET.sub("/demo/{asset}", path))))
    return served


def test_every_served_route_is_documented_and_every_documented_route_is_served() -> None:
    settings = Settings(session_secret="t" * 32, wechat_api_base="http://127.0.0.1:8090")
    served = served_operations(create_app(settings))
    documented = set(operations(build_document()))
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_error_codes_agree_with_the_registry() -> None:
    """Each error response lists codes that exist and carry that response's status, its schema pins
    `code` to exactly those, and every code of the registry is documented somewhere."""
    document = build_document()
    listed: set[str] = set()
    for where, status, response in documented_responses(document):
        codes = response.get("x-error-codes")
        if codes is None:
            continue
        listed.update(codes)
        assert set(codes) <= set(ERRORS), (where, status)
        assert {ERRORS[code][0] for code in codes} == {int(status)}, (where, status)
        validator = jsonschema_rs.validator_for(
            {**response["content"]["application/json"]["schema"], "components": document["components"]}
        )
        for code, (_, message) in ERRORS.items():
            body = {"error": {"code": code, "message": message}}
            assert validator.is_valid(body) == (code in codes), (where, status, code)
    assert listed == set(ERRORS)


async def test_served_document_is_public_and_is_the_built_one(stack: Stack) -> None:
    reply = await stack.client().request("GET", "/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == build_document(stack.url, stack.settings)


# Request bodies: the schema draws the line where the server does. A body the schema accepts gets past
# the server's validation (to an unknown voice's 404, or to the audio check); one it refuses is refused.
UNKNOWN_VOICE = "v_" + "a" * 26
TEXT_MAX = Settings().text_max_chars  # the stack's too
SYNTHESIS_BODIES = [
    ({"text": "你好", "voice_id": UNKNOWN_VOICE}, True),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "mode": "instruct", "instruct": "sichuan"}, True),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "instruct": None, "format": "wav", "speed": 2}, True),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "notify": True, "unknown_field": 1}, True),
    ({"text": "x" * TEXT_MAX, "voice_id": UNKNOWN_VOICE}, True),
    ({"text": "x" * (TEXT_MAX + 1), "voice_id": UNKNOWN_VOICE}, False),
    ({"text": " ", "voice_id": UNKNOWN_VOICE}, False),
    ({"voice_id": UNKNOWN_VOICE}, False),
    ({"text": 5, "voice_id": UNKNOWN_VOICE}, False),
    ({"text": "你好"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "mode": "instruct"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "mode": "instruct", "instruct": "klingon"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "instruct": "sichuan"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "mode": "clone"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "format": "ogg"}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "speed": 2.5}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "speed": True}, False),
    ({"text": "你好", "voice_id": UNKNOWN_VOICE, "notify": "yes"}, False),
]
UPLOAD_BODIES = [
    ({"audio_base64": "AAAA", "prompt_text": "你好", "consent": "self"}, True),
    (
        {
            "audio_base64": "data:audio/wav;base64,AAAA",
            "prompt_text": "你好",
            "name": "名" * 20,
            "consent": "authorized",
        },
        True,
    ),
    (
        {"audio_base64": "AAAA", "prompt_text": "你好", "name": "", "unknown_field": 1, "consent": "self"},
        True,
    ),
    ({"audio_base64": "AAAA", "prompt_text": "你好"}, False),
    ({"audio_base64": "AAAA", "prompt_text": "你好", "consent": ""}, False),
    ({"audio_base64": "AAAA", "prompt_text": "你好", "consent": "unrecorded"}, False),
    ({"audio_base64": "AAAA", "prompt_text": "你好", "consent": True}, False),
    ({"audio_base64": "AAAA"}, False),
    ({"audio_base64": "", "prompt_text": "你好"}, False),
    ({"audio_base64": "AAAA", "prompt_text": "x" * (TEXT_MAX + 1)}, False),
    ({"audio_base64": "AAAA", "prompt_text": "你好", "name": "名" * 21}, False),
    ({"audio_base64": "AAAA", "prompt_text": 5}, False),
    ({"audio_base64": "AAAA", "prompt_text": " "}, False),
    ({"audio_base64": "AAAA", "prompt_text": "你好", "name": " "}, False),
]


async def test_request_schemas_refuse_exactly_what_the_server_refuses(stack: Stack) -> None:
    document = build_document(stack.url, stack.settings)
    user = await stack.user()
    synthesis = component_validator(document, "SynthesisRequest")
    for body, valid in SYNTHESIS_BODIES:
        assert synthesis.is_valid(body) == valid, body
        reply = await user.request("POST", "/v1/syntheses", json=body)
        assert (reply.status == 404) == valid, (body, reply.body)  # 404: past validation, to the voice
    upload = component_validator(document, "VoiceUploadJson")
    for body, valid in UPLOAD_BODIES:
        assert upload.is_valid(body) == valid, body
        reply = await user.request("POST", "/v1/voices", json=body)
        assert (reply.error_code == "audio_invalid") == valid, (body, reply.body)


async def test_multipart_schema_refuses_exactly_what_the_server_refuses(stack: Stack) -> None:
    """As wx.uploadFile sends it: the file part, then `formData` fields; the form's schema is closed."""
    form_schema = component_validator(build_document(stack.url, stack.settings), "VoiceUploadForm")
    user = await stack.user()
    forms = [
        ({"file": "not audio", "prompt_text": "你好", "name": "我的", "consent": "self"}, True),
        ({"file": "not audio", "prompt_text": "你好", "consent": "authorized"}, True),
        ({"file": "not audio", "prompt_text": "你好"}, False),
        ({"file": "not audio", "prompt_text": "你好", "consent": "yes"}, False),
        ({"file": "not audio"}, False),
        ({"prompt_text": "你好"}, False),
        ({"file": "not audio", "prompt_text": "你好", "extra": "1"}, False),
    ]
    for fields, valid in forms:
        assert form_schema.is_valid(fields) == valid, fields
        form = aiohttp.FormData()
        for name, value in fields.items():
            file_part = (
                {"filename": "a.mp3", "content_type": "application/octet-stream"} if name == "file" else {}
            )
            form.add_field(name, value.encode() if file_part else value, **file_part)
        reply = await user.request("POST", "/v1/voices", data=form)
        assert (reply.error_code == "audio_invalid") == valid, (fields, reply.body)


# --- regressions the property-based run found ----------------------------------------------------------


async def test_malformed_multipart_part_headers_are_a_bad_request(stack: Stack) -> None:
    user = await stack.user()
    boundary = "b0undary"
    body = f"--{boundary}\r\nnot a header line\r\n\r\nx\r\n--{boundary}--\r\n".encode()
    reply = await user.request(
        "POST",
        "/v1/voices",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert (reply.status, reply.error_code) == (400, "invalid_request"), reply.body


# --- property-based run against the live gateway -------------------------------------------------------

EXAMPLES_PER_OPERATION = 25
SUBMISSIONS_WITH_A_REAL_VOICE = 8  # each one is real work for the worker


class Plan(NamedTuple):
    label: str
    strategy: st.SearchStrategy[schemathesis.Case]
    examples: int
    negative: bool = False


def fuzz_config(token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            # Schemathesis adds the token itself, so it knows when a negative case leaves it out on purpose.
            "auth": {"openapi": {"bearer": {"bearer": token}}},
            "checks": {
                # Schema-valid ids still name no voice or task of this user: 404 is the right answer.
                "positive_data_acceptance": {"enabled": False},
                # 503 is documented (overloaded, unavailable); the schema check pins its error codes.
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
            },
        }
    )


def run_cases(plan: Plan, base_url: str) -> None:
    """Send each generated case and check the answer against the document (status, headers, body)."""

    @hypothesis.settings(
        max_examples=plan.examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run: CI failures reproduce
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=plan.strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, timeout=30, allow_redirects=False)

    run()


def fuzz(
    document: dict[str, Any],
    base_url: str,
    token: str,
    plans: Callable[[schemathesis.BaseSchema], Iterable[Plan]],
) -> list[str]:
    """Run the plans made from the document; one line of findings per failed plan.

    Runs in a thread: schemathesis sends with `requests`, and the gateway serves on the test's loop.
    """
    schema = schemathesis.openapi.from_dict(document, config=fuzz_config(token))
    failures = []
    for plan in plans(schema):
        try:
            run_cases(plan, base_url)
        except hypothesis.errors.Unsatisfiable:
            if not plan.negative:  # else: the operation has nothing that could be sent wrong
                failures.append(f"{plan.label}: no valid request can be generated")
        except (Exception, schemathesis.errors.FailureGroup) as exc:
            failures.append(f"{plan.label}: {exc}")
    return failures


def arbitrary_data(schema: schemathesis.BaseSchema) -> Iterator[Plan]:
    """Every operation, with valid and with invalid data; logging out last, as it revokes the token
    every other operation is sent with."""
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in sorted(operations, key=lambda op: op.label == "DELETE /v1/session"):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            yield Plan(
                f"{operation.label} ({mode.value})", strategy, EXAMPLES_PER_OPERATION, mode.is_negative
            )


def known_ids(known: dict[str, str]) -> Callable[[schemathesis.BaseSchema], Iterator[Plan]]:
    """Operations on real ids (path parameters, and `voice_id` in a submission): the success paths."""

    def plans(schema: schemathesis.BaseSchema) -> Iterator[Plan]:
        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            if operation.method == "get" and not names and operation.path.startswith("/v1/"):
                # The lists, now that they hold something.
                yield Plan(f"{operation.label} (known ids)", operation.as_strategy(), 5)
            elif names and names <= set(known) and operation.method != "delete":
                strategy = operation.as_strategy(path_parameters={name: known[name] for name in names})
                yield Plan(f"{operation.label} (known ids)", strategy, EXAMPLES_PER_OPERATION)
            if operation.label == "POST /v1/syntheses":
                strategy = operation.as_strategy().map(lambda case: with_voice(case, known["voice_id"]))
                yield Plan(f"{operation.label} (a real voice)", strategy, SUBMISSIONS_WITH_A_REAL_VOICE)

    return plans


def with_voice(case: schemathesis.Case, voice_id: str) -> schemathesis.Case:
    case.body["voice_id"] = voice_id
    # No subscription messages: nothing of this test may still be running when the next one starts.
    case.body["notify"] = False
    return case


async def all_tasks_final(user: ApiClient) -> bool:
    reply = await user.request("GET", "/v1/syntheses?limit=100")
    return all(TaskStatus(task["status"]).is_final for task in reply.body["tasks"])


async def test_property_based_run_finds_no_server_error_and_no_contract_violation(stack: Stack) -> None:
    user = await stack.user("fuzz")
    document = (await user.request("GET", "/openapi.json")).body
    failures = await asyncio.to_thread(fuzz, document, stack.url, user.token, arbitrary_data)
    assert not failures, "\n\n".join(failures)


# The session's first synthesis also warms the engine up: tens of seconds on a busy 2-core machine.
@pytest.mark.timeout(240)
async def test_property_based_run_on_real_voices_and_tasks(stack: Stack) -> None:
    user = await stack.user("fuzz-known")
    document = (await user.request("GET", "/openapi.json")).body
    for as_base64 in (False, True):  # the success of an upload is more than random bytes ever reach
        reply = await user.upload_voice(speech_sample("wav"), as_base64=as_base64)
        assert reply.status == 201, reply.body
        component_validator(document, "Voice").validate(reply.body)
        voice = await user.wait_voice(reply.body["voice_id"])
        assert voice["status"] == "ready", voice
    submitted = await user.synthesize(SAMPLE_TEXT, voice["voice_id"])
    task = await user.wait_task(submitted.body["task_id"], timeout_s=150)
    assert task["status"] == "succeeded", task
    known = {"voice_id": voice["voice_id"], "task_id": task["task_id"]}

    failures = await asyncio.to_thread(fuzz, document, stack.url, user.token, known_ids(known))

    # The submissions were real work: let the worker finish it, so later tests start on a quiet stack.
    await eventually(lambda: all_tasks_final(user), timeout_s=60, interval_s=0.5)
    assert not failures, "\n\n".join(failures)
