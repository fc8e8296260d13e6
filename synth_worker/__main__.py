"""`python -m synth_worker`: one synthesis worker process (run several, on several machines)."""

from __future__ import annotations

import asyncio
import signal

from common.config import Settings
from common.logs import configure_logging
from synth_worker.worker import run_worker


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_worker(settings, stop)


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level, process="worker", json=settings.log_format == "json")
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
