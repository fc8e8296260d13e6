"""`python -m wechat_emulator`: serve the WeChat emulator until SIGINT or SIGTERM.

Environment (read once, here): EMULATOR_HOST (127.0.0.1), EMULATOR_PORT (8090), WECHAT_PUSH_URL
(http://127.0.0.1:8080/wechat/push), WECHAT_APPID / WECHAT_SECRET / WECHAT_PUSH_TOKEN /
WECHAT_PUSH_AES_KEY / WECHAT_TEMPLATE_ID (the `common.config` EMULATOR_* values; an empty AES
key means plain mode), EMULATOR_PUSH_FORMAT (json|xml), EMULATOR_MEDIA_VERDICT_DELAY_S (0),
LOG_LEVEL (INFO).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping

from aiohttp import web

from common.config import (
    EMULATOR_APPID,
    EMULATOR_PUSH_AES_KEY,
    EMULATOR_PUSH_TOKEN,
    EMULATOR_SECRET,
    EMULATOR_TEMPLATE_ID,
)
from common.logs import configure_logging
from wechat_emulator.app import EmulatorConfig, create_emulator_app

log = logging.getLogger("wechat_emulator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8090
DEFAULT_PUSH_URL = "http://127.0.0.1:8080/wechat/push"


def config_from_env(env: Mapping[str, str]) -> tuple[EmulatorConfig, str, int]:
    """The emulator config plus the host and port to listen on."""

    def text(name: str, default: str) -> str:
        return env.get(name, "").strip() or default

    aes_key = env.get("WECHAT_PUSH_AES_KEY", EMULATOR_PUSH_AES_KEY).strip()
    config = EmulatorConfig(
        appid=text("WECHAT_APPID", EMULATOR_APPID),
        secret=text("WECHAT_SECRET", EMULATOR_SECRET),
        push_url=text("WECHAT_PUSH_URL", DEFAULT_PUSH_URL),
        push_token=text("WECHAT_PUSH_TOKEN", EMULATOR_PUSH_TOKEN),
        push_aes_key=aes_key,
        push_mode="safe" if aes_key else "plain",
        push_format=text("EMULATOR_PUSH_FORMAT", "json"),
        media_verdict_delay_s=float(text("EMULATOR_MEDIA_VERDICT_DELAY_S", "0")),
        template_id=text("WECHAT_TEMPLATE_ID", EMULATOR_TEMPLATE_ID),
    )
    return config, text("EMULATOR_HOST", DEFAULT_HOST), int(text("EMULATOR_PORT", str(DEFAULT_PORT)))


async def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Run until a signal arrives, then stop listening and let the app drain its media checks."""
    runner = web.AppRunner(create_emulator_app(config), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info(
            "WeChat emulator for %s on http://%s:%d, pushing %s %s to %s",
            config.appid,
            host,
            port,
            "safe" if config.safe_mode else "plain",
            config.push_format,
            config.push_url,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
    configure_logging(level, process="wechat-emulator")
    try:
        config, host, port = config_from_env(os.environ)
    except ValueError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    asyncio.run(serve(config, host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
