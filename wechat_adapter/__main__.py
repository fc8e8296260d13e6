"""`python -m wechat_adapter`: the gateway alone (HTTP API, WeChat push endpoint, notifier)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from common.config import Settings
from common.logs import configure_logging
from wechat_adapter.app import create_app

log = logging.getLogger("wechat_adapter")


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: stop accepting, let requests finish (bounded), then tear down."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), shutdown_timeout=10.0, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.gateway_host, settings.gateway_port).start()
        log.info("listening on http://%s:%s", settings.gateway_host, settings.gateway_port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, process="gateway", json=settings.log_format == "json")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
