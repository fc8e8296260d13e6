"""One logging set-up for every process: one line per event, named module loggers."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO", *, process: str) -> None:
    """Send records to stderr as `time level process logger: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is replaced by our own request metrics; nats-py is chatty at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
