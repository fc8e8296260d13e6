"""The H5 demo page at /demo/: a few static files under a strict Content-Security-Policy, and the
page's configuration at /demo/config.json.

The files are read once, when the routes are added, so a package installed without them fails at
start-up rather than on the first visit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from common.config import EMULATOR_APPID, Settings
from wechat_adapter.fields import DEMO_CONTENT_TYPES as CONTENT_TYPES
from wechat_adapter.http.requests import gateway_of, json_response

STATIC_DIR = "static/demo"
INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static_files() -> dict[str, StaticFile]:
    """The page's files by name (those with a known content type), read from the package."""
    folder = resources.files("wechat_adapter").joinpath(STATIC_DIR)
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    if INDEX not in files:
        raise RuntimeError(f"wechat_adapter/{STATIC_DIR}/{INDEX} is missing from the installed package")
    return files


def dev_login_enabled(settings: Settings) -> bool:
    """The made-up login codes of the page work only against the emulator's test app; real WeChat
    never issues that app id, so a production gateway never offers the development login."""
    return settings.wechat_appid == EMULATOR_APPID


def content_security_policy(settings: Settings) -> str:
    """Only our own scripts and styles; audio from the gateway's public origin (task `audio_url`s
    are absolute and may name another host than the page was opened with) or a local recording, and
    fetch() there too (a task's `stream_url`, read as it is synthesised, is absolute as well)."""
    parts = urlsplit(settings.public_base_url)
    public_origin = f"{parts.scheme}://{parts.netloc}"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"media-src 'self' blob: {public_origin}",
            f"connect-src 'self' {public_origin}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def _page_headers(settings: Settings) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the page only talks to its own gateway
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
        "Cache-Control": "no-cache",  # revalidate (ETag), so an upgraded gateway serves the new page
    }


def _file_handler(static: StaticFile) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(request: web.Request) -> web.Response:
        headers = _page_headers(gateway_of(request).settings) | {"ETag": static.etag}
        if request.headers.get("If-None-Match") == static.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=static.body, content_type=static.content_type, charset="utf-8", headers=headers
        )

    return serve


async def page_config(request: web.Request) -> web.Response:
    """What the page needs to know about this gateway."""
    settings = gateway_of(request).settings
    response = json_response(
        {
            "dev_login": dev_login_enabled(settings),
            "text_max_chars": settings.text_max_chars,
            "upload_max_bytes": settings.upload_max_bytes,
        }
    )
    response.headers.update(_page_headers(settings) | {"Cache-Control": "no-store"})
    return response


async def redirect_to_page(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/demo/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/demo", redirect_to_page)
    app.router.add_get("/demo/config.json", page_config)
    for name, static in load_static_files().items():
        app.router.add_get("/demo/" if name == INDEX else f"/demo/{name}", _file_handler(static))
