"""The emulator's composition root: one aiohttp app around one `Emulator` built from one config."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from wechat_emulator.api import add_wechat_routes
from wechat_emulator.config import EmulatorConfig
from wechat_emulator.control import add_control_routes
from wechat_emulator.records import PushAttempt, RecordedCall, Verdict
from wechat_emulator.state import API_NAMES, EMULATOR_KEY, Emulator

__all__ = [
    "API_NAMES",
    "EMULATOR_KEY",
    "Emulator",
    "EmulatorConfig",
    "PushAttempt",
    "RecordedCall",
    "Verdict",
    "create_emulator_app",
]


def create_emulator_app(config: EmulatorConfig) -> web.Application:
    """An app serving the WeChat endpoints and `/_emulator/` controls; `app[EMULATOR_KEY]` is its state.

    The Emulator's HTTP client and background media checks live exactly as long as the app runs.
    """
    app = web.Application()
    app[EMULATOR_KEY] = Emulator(config)
    app.cleanup_ctx.append(_emulator_lifetime)
    add_wechat_routes(app)
    add_control_routes(app)
    return app


async def _emulator_lifetime(app: web.Application) -> AsyncIterator[None]:
    emulator = app[EMULATOR_KEY]
    await emulator.start()
    yield
    await emulator.close()
