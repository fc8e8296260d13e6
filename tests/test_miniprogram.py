"""The reference mini program (miniprogram/) against the API it calls.

tests/miniprogram/run.js loads the mini program's own JS in node with a fake `wx`, App, Page and
Component, and drives its pages through the handlers their WXML binds (recording, uploading,
submitting, polling, playing). This file runs it, then checks every `wx.request` / `wx.uploadFile`
it recorded against the gateway's OpenAPI document: the operation exists, the bearer token is sent
where required, path/query/header parameters and the JSON or multipart body validate against the
operation's schemas, and every canned answer the harness gave validates against the operation's
responses (so the fakes cannot drift from the server). It also checks the project's files: every page
complete, every WXML binding naming a real handler, icon-only buttons labelled, the AIGC label shown.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema_rs
import pytest

from common.config import Settings
from common.presets import PRESETS
from wechat_adapter.errors import ERRORS
from wechat_adapter.fields import NAME_MAX_CHARS
from wechat_adapter.intake import MAX_SPEECH_S, MIN_SPEECH_S, STORED_RATE_HZ
from wechat_adapter.openapi import build_document
from wechat_adapter.wechat.subscribe_message import task_page

ROOT = Path(__file__).resolve().parent.parent
MINIPROGRAM = ROOT / "miniprogram"
HARNESS = ROOT / "tests" / "miniprogram" / "run.js"
NODE = shutil.which("node")
NODE_TIMEOUT_S = 60

NO_NODE = "node is not installed: the mini program's JS cannot be run (install Node.js 18+)"

# /v1 operations a mini program reaches without a call: audio is a signed URL handed to
# InnerAudioContext, and polling replaces the SSE stream (wx.request cannot read text/event-stream
# on every base library). The result plays while it is synthesised from the chunked PCM stream
# (streamSynthesis, a wx.request with enableChunked), so the WebSocket that synthesises and streams in
# one go (streamSocket) is for other clients.
NOT_CALLED = {"getVoiceAudio", "getSynthesisAudio", "followSynthesis", "streamSocket"}
AUDIO_OPERATIONS = {"getVoiceAudio", "getSynthesisAudio"}
# Handlers that play synthesised (not recorded) audio: their templates must carry the AIGC label.
AI_AUDIO_HANDLERS = {"playResult", "play", "stopStream"}
# Bindings such as bindtap="x", bind:tap="x", catchtap, capture-bind:, mut-bind:
BINDING = re.compile(r"\s(?:capture-)?(?:mut-)?(?:bind|catch):?([a-z]+)=\"([^\"]*)\"")
BUTTON = re.compile(r"<button\b([^>]*)>(.*?)</button>", re.S)
MUSTACHE = re.compile(r"\{\{(.*?)\}\}", re.S)
QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")
READABLE = re.compile(r"[A-Za-z\u4e00-\u9fff]")


# --- running the harness -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The harness's report; the fixtures it gets are the server's own presets, errors and limits."""
    if NODE is None:
        pytest.skip(NO_NODE)  # the tests of the project's files below still run
    settings = Settings()
    work = tmp_path_factory.mktemp("miniprogram")
    fixtures = {
        "presets": [p.to_json() for p in PRESETS],
        "errors": {code: [status, message] for code, (status, message) in ERRORS.items()},
        "sessionTtlS": settings.session_ttl_s,
        "textMaxChars": settings.text_max_chars,
        "maxSpeechS": MAX_SPEECH_S,
    }
    (work / "fixtures.json").write_text(json.dumps(fixtures, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        [NODE, str(HARNESS), str(MINIPROGRAM), str(work / "fixtures.json"), str(work / "report.json")],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"the harness crashed:\n{done.stderr}"
    return json.loads((work / "report.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def api(report: dict[str, Any]) -> OpenApi:
    return OpenApi(build_document(public_base_url=report["config"]["apiBaseUrl"]))


# --- reading the OpenAPI document --------------------------------------------------------------------


class OpenApi:
    """Finds an operation for a method and URL, and validates values against the document's schemas."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.base_url = document["servers"][0]["url"]
        # Literal paths before templated ones, so /v1/voices never matches as /v1/voices/{voice_id}.
        self._routes = sorted(
            ((self._path_regex(template), template) for template in document["paths"]),
            key=lambda route: route[1].count("{"),
        )
        self._validators: dict[str, jsonschema_rs.Draft202012Validator] = {}

    @staticmethod
    def _path_regex(template: str) -> re.Pattern[str]:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        return re.compile(f"^{pattern}$")

    def operation(self, method: str, path: str) -> tuple[dict[str, Any], dict[str, str]]:
        """The operation and its decoded path parameters; fails the test when there is none."""
        for regex, template in self._routes:
            match = regex.match(path)
            if match:
                operation = self.document["paths"][template].get(method.lower())
                assert operation is not None, f"{method} is not an operation of {template}"
                return operation, {k: unquote(v) for k, v in match.groupdict().items()}
        raise AssertionError(f"no path of the OpenAPI document matches {path}")

    def errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        """Why `value` does not validate against `schema` (refs resolve against the document)."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            self._validators[key] = jsonschema_rs.Draft202012Validator(
                {**schema, "components": self.document["components"]}, validate_formats=True
            )
        return [error.message for error in self._validators[key].iter_errors(value)]


def _header(headers: dict[str, Any], name: str) -> Any:
    """A header by name, case-insensitively (wx and servers differ in case)."""
    return next((v for k, v in (headers or {}).items() if k.lower() == name.lower()), None)


def _typed(value: str, schema: dict[str, Any]) -> Any:
    """A query or header string as the type its schema names."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean":
        return {"true": True, "false": False}.get(value, value)
    return value


def _query_credentials(api: OpenApi, operation: dict[str, Any]) -> dict[str, str]:
    """The operation's security schemes that travel in the query (a signed link's `sig`): name -> scheme."""
    schemes = api.document["components"]["securitySchemes"]
    return {
        schemes[name]["name"]: name
        for requirement in operation["security"]
        for name in requirement
        if schemes[name]["type"] == "apiKey" and schemes[name]["in"] == "query"
    }


def _parameter_problems(
    api: OpenApi, operation: dict[str, Any], call: dict[str, Any], path_params: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    query = dict(parse_qsl(urlsplit(call["url"]).query, keep_blank_values=True))
    declared = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
    declared |= {("query", name) for name in _query_credentials(api, operation)}
    problems += [f"query {name!r} is not a parameter" for name in query if ("query", name) not in declared]
    for parameter in operation.get("parameters", []):
        where, name, schema = parameter["in"], parameter["name"], parameter["schema"]
        sent = {
            "path": path_params.get(name),
            "query": query.get(name),
            "header": _header(call["header"], name),
        }.get(where)
        if sent is None:
            if parameter.get("required"):
                problems.append(f"required {where} parameter {name!r} is missing")
            continue
        problems += [f"{where} {name!r}: {e}" for e in api.errors(schema, _typed(str(sent), schema))]
    return problems


def _security_problems(api: OpenApi, operation: dict[str, Any], call: dict[str, Any]) -> list[str]:
    authorization = _header(call["header"], "Authorization")
    if not operation["security"]:
        return ["a public operation was sent a token"] if authorization else []
    query = dict(parse_qsl(urlsplit(call["url"]).query, keep_blank_values=True))
    signed = [name for name in _query_credentials(api, operation) if query.get(name)]
    if signed and authorization is None:
        return []  # a signed link (a task's stream_url): the `sig` is the credential
    if not any("bearer" in requirement for requirement in operation["security"]):
        return ["the operation takes no bearer token"]
    if not isinstance(authorization, str) or not re.fullmatch(r"Bearer \S+", authorization):
        return [f"Authorization must be 'Bearer <token>', got {authorization!r}"]
    return []


def _body_problems(api: OpenApi, operation: dict[str, Any], call: dict[str, Any]) -> list[str]:
    body = operation.get("requestBody")
    if call["kind"] == "uploadFile":
        form = (body or {}).get("content", {}).get("multipart/form-data")
        if form is None:
            return ["wx.uploadFile to an operation that takes no multipart/form-data"]
        schema = form["schema"]
        file_schema = api.document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]["properties"]
        if file_schema.get(call["name"], {}).get("format") != "binary":
            return [f"uploadFile name {call['name']!r} is not the operation's file field"]
        return api.errors(schema, {**call["formData"], call["name"]: "<the recorded file>"})
    if body is None:
        return [] if call.get("data") is None else ["a body sent to an operation that takes none"]
    if call.get("data") is None:
        return ["the operation requires a body"] if body.get("required") else []
    media_type = (_header(call["header"], "Content-Type") or "application/json").split(";")[0].strip()
    if media_type not in body["content"]:
        return [f"content type {media_type} is not accepted"]
    return api.errors(body["content"][media_type]["schema"], call["data"])


def _reply_problems(api: OpenApi, operation: dict[str, Any], reply: dict[str, Any]) -> list[str]:
    response = operation["responses"].get(str(reply["status"]))
    if response is None:
        return [f"status {reply['status']} is not a response of {operation['operationId']}"]
    problems = []
    for name, header in response.get("headers", {}).items():
        value = _header(reply.get("headers", {}), name)
        if value is None:
            if header.get("required"):
                problems.append(f"response header {name} is missing")
            continue
        schema = header["schema"]
        problems += [f"{name}: {e}" for e in api.errors(schema, _typed(str(value), schema))]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return problems + ([] if reply["body"] in ("", None) else ["a body where the operation has none"])
    return problems + api.errors(content["schema"], reply["body"])


def _where(call: dict[str, Any]) -> str:
    return f"[{call['scenario']}] {call['method']} {call['url']}"


# --- the harness's scenarios ---------------------------------------------------------------------------


def test_every_scenario_passes(report: dict[str, Any]) -> None:
    failed = [f"{s['name']}:\n{s['error']}" for s in report["scenarios"] if not s["ok"]]
    assert not failed, "\n\n".join(failed)
    assert len(report["scenarios"]) >= 20


def test_every_call_matches_the_openapi_document(report: dict[str, Any], api: OpenApi) -> None:
    """URL, method, token, parameters and body of every wx.request / wx.uploadFile the pages made."""
    assert report["calls"], "the harness recorded no calls"
    problems = []
    for call in report["calls"]:
        if not call["url"].startswith(api.base_url + "/"):
            problems.append(f"{_where(call)}: not under the API base URL {api.base_url}")
            continue
        operation, path_params = api.operation(call["method"], urlsplit(call["url"]).path)
        found = (
            _security_problems(api, operation, call)
            + _parameter_problems(api, operation, call, path_params)
            + _body_problems(api, operation, call)
        )
        problems += [f"{_where(call)}: {p}" for p in found]
    assert not problems, "\n".join(problems)


def test_every_canned_answer_matches_the_openapi_document(report: dict[str, Any], api: OpenApi) -> None:
    """The harness's fake answers are the API's shapes, so what the pages were tested with is real."""
    problems = []
    on_contract = [
        c for c in report["calls"] if "networkError" not in c["reply"] and "offContract" not in c["reply"]
    ]
    for call in on_contract:
        operation, _ = api.operation(call["method"], urlsplit(call["url"]).path)
        found = _reply_problems(api, operation, call["reply"])
        problems += [f"{_where(call)} -> {call['reply']['status']}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    assert len(on_contract) > 0.9 * len(report["calls"]), "most answers should come from the contract"


def test_audio_is_played_from_signed_api_links(report: dict[str, Any], api: OpenApi) -> None:
    """InnerAudioContext cannot send headers: what it plays is an audio operation's `?sig=` link."""
    remote = [urlsplit(a["src"]) for a in report["audio"] if not a["src"].startswith("wxfile://")]
    operations = [api.operation("GET", url.path)[0] for url in remote]
    assert {operation["operationId"] for operation in operations} == AUDIO_OPERATIONS
    for url, operation in zip(remote, operations, strict=True):
        assert {"signedLink": []} in operation["security"]
        assert dict(parse_qsl(url.query)).get("sig"), url.geturl()


def _answered_tasks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every task an answer of the fake API carried: one task, or a list of them."""
    tasks = []
    for call in report["calls"]:
        body = call["reply"].get("body")
        if isinstance(body, dict):
            tasks += [task for task in [body, *body.get("tasks", [])] if "task_id" in task]
    return tasks


def test_the_stream_is_read_in_chunks_at_the_tasks_signed_link(report: dict[str, Any], api: OpenApi) -> None:
    """The audio stream is a chunked wx.request for PCM (what WebAudioContext plays) at the very
    `stream_url` a task answer gave: the signed link, never a URL the mini program made up."""
    stream_urls = {task["stream_url"] for task in _answered_tasks(report)}
    streams = [
        call
        for call in report["calls"]
        if api.operation(call["method"], urlsplit(call["url"]).path)[0]["operationId"] == "streamSynthesis"
    ]
    assert streams, "no scenario streamed a task's audio"
    for call in streams:
        base, _, query = call["url"].partition("&")
        assert (call.get("enableChunked"), call.get("responseType")) == (True, "arraybuffer"), _where(call)
        assert base in stream_urls and query == "format=pcm", _where(call)


def test_the_mini_program_calls_every_client_operation(report: dict[str, Any], api: OpenApi) -> None:
    called = {api.operation(c["method"], urlsplit(c["url"]).path)[0]["operationId"] for c in report["calls"]}
    client_operations = {
        operation["operationId"]
        for path, item in api.document["paths"].items()
        if path.startswith("/v1/")
        for operation in item.values()
    }
    assert called == client_operations - NOT_CALLED


def test_every_api_function_is_exercised(report: dict[str, Any]) -> None:
    assert report["apiExports"], "utils/api.js exports nothing"
    assert sorted(report["apiExports"]) == report["apiInvoked"]


# --- the project's files -------------------------------------------------------------------------------


def _app() -> dict[str, Any]:
    return json.loads((MINIPROGRAM / "app.json").read_text(encoding="utf-8"))


def _components() -> set[str]:
    used = set()
    for page in _app()["pages"]:
        page_json = json.loads((MINIPROGRAM / f"{page}.json").read_text(encoding="utf-8"))
        used |= {path.lstrip("/") for path in page_json.get("usingComponents", {}).values()}
    return used


def _templates() -> dict[str, str]:
    return {
        route: (MINIPROGRAM / f"{route}.wxml").read_text(encoding="utf-8")
        for route in [*_app()["pages"], *sorted(_components())]
    }


def test_every_page_and_component_has_its_four_files() -> None:
    app = _app()
    assert app["pages"], "app.json lists no pages"
    for route in [*app["pages"], *_components()]:
        for ext in ("js", "json", "wxml", "wxss"):
            assert (MINIPROGRAM / f"{route}.{ext}").is_file(), f"{route}.{ext} is missing"
    assert {item["pagePath"] for item in app["tabBar"]["list"]} <= set(app["pages"])
    assert (MINIPROGRAM / app["sitemapLocation"]).is_file()
    project = json.loads((MINIPROGRAM / "project.config.json").read_text(encoding="utf-8"))
    assert project["appid"] and project["libVersion"] and project["compileType"] == "miniprogram"


def test_the_subscription_message_opens_a_page_that_exists() -> None:
    """The notifier's `page` (subscribe_message.task_page) must be a page of the mini program."""
    route, _, query = task_page("t_aaaaaaaaaaaaaaaaaaaaaaaaaa").partition("?")
    assert route in _app()["pages"]
    assert query.startswith("id="), "pages/task/task reads the task id from `id`"


def test_wxml_bindings_name_handlers_that_exist(report: dict[str, Any]) -> None:
    problems = []
    for route, template in _templates().items():
        for event, handler in BINDING.findall(template):
            if handler not in report["handlers"][route]:
                problems.append(f"{route}.wxml: {event} -> {handler}, which the JS does not define")
    assert not problems, "\n".join(problems)


def test_icon_only_buttons_have_an_aria_label() -> None:
    """A button showing only ▶ / ■ / ✕ must say what it does to screen readers."""
    problems = []
    for route, template in _templates().items():
        for attributes, content in BUTTON.findall(template):
            literal_parts = [a or b for m in MUSTACHE.findall(content) for a, b in QUOTED.findall(m)]
            visible = MUSTACHE.sub("", content) + "".join(literal_parts)
            if not READABLE.search(visible) and "aria-label=" not in attributes:
                problems.append(f"{route}.wxml: <button{attributes}> shows only {content.strip()!r}")
    assert not problems, "\n".join(problems)


def test_ai_generated_audio_is_labelled_where_it_plays() -> None:
    """China's AIGC labelling rules: where synthesised audio is played, say it is AI-made."""
    templates = _templates()
    players = [
        route
        for route, template in templates.items()
        if {handler for _, handler in BINDING.findall(template)} & AI_AUDIO_HANDLERS
    ]
    assert len(players) >= 2, "the result player and the history list play synthesised audio"
    for route in players:
        assert "由 AI 生成" in templates[route], f"{route}.wxml plays AI audio without the AIGC label"


def test_only_the_api_module_touches_the_network() -> None:
    network = re.compile(r"\bwx\.(request|uploadFile|downloadFile|connectSocket)\s*\(")
    transport = re.compile(r"require\(['\"][./]*(utils/)?transport['\"]\)")
    for source in MINIPROGRAM.rglob("*.js"):
        relative = source.relative_to(MINIPROGRAM).as_posix()
        text = source.read_text(encoding="utf-8")
        if relative != "utils/transport.js":
            assert not network.search(text), f"{relative} calls the network itself; go through utils/api.js"
        if relative not in ("utils/api.js", "utils/transport.js"):
            assert not transport.search(text), f"{relative} uses utils/transport.js; use utils/api.js"


def test_config_agrees_with_the_server(report: dict[str, Any]) -> None:
    config, settings = report["config"], Settings()
    assert config["textMaxChars"] == settings.text_max_chars
    assert config["voiceNameMaxChars"] == NAME_MAX_CHARS
    recording = config["recording"]
    assert recording["format"] in ("aac", "mp3")
    # The rate intake keeps samples at; outside 32-128 kbps at 24 kHz, WeChat refuses to record.
    assert (recording["sampleRate"], recording["numberOfChannels"]) == (STORED_RATE_HZ, 1)
    assert 32_000 <= recording["encodeBitRate"] <= 128_000
    min_ms, max_ms = recording["minDurationMs"], recording["maxDurationMs"]
    assert MIN_SPEECH_S * 1000 <= min_ms < max_ms <= MAX_SPEECH_S * 1000
    assert config["subscribeTemplateId"] == "", "the shipped config must not carry someone's template id"
