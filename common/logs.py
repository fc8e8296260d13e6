"""One logging set-up for every process: one line per event, named module loggers.

Lines are `time level process logger: message` for people, or one JSON object each (`json=True`)
for log shippers. Either way a record carries the `trace_id` and `task_id` of the request or event
being handled, bound with `log_context` (a contextvar, so concurrent requests never mix them up).
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

_TRACE_ID: ContextVar[str | None] = ContextVar("trace_id", default=None)
_TASK_ID: ContextVar[str | None] = ContextVar("task_id", default=None)


def bind_trace_id(trace_id: str) -> None:
    """Tag later log records of the current task (an aiohttp request runs in its own task)."""
    _TRACE_ID.set(trace_id)


@contextlib.contextmanager
def log_context(*, trace_id: str | None = None, task_id: str | None = None) -> Iterator[None]:
    """Tag log records written inside the block; the previous values come back after it."""
    trace_token = _TRACE_ID.set(trace_id)
    task_token = _TASK_ID.set(task_id)
    try:
        yield
    finally:
        _TASK_ID.reset(task_token)
        _TRACE_ID.reset(trace_token)


class ContextFilter(logging.Filter):
    """Adds `trace_id` and `task_id` (None when unknown) to every record passing the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            record.trace_id = _TRACE_ID.get()
        if getattr(record, "task_id", None) is None:
            record.task_id = _TASK_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, process, logger, message, trace_id/task_id when known."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": self._process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "task_id"):
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return jsonlib.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level process logger: message [trace=…]`."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {process} %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        return text if trace_id is None or trace_id in text else f"{text} [trace={trace_id}]"


def log_handler(stream: TextIO, *, process: str, json: bool = False) -> logging.Handler:
    """A handler writing to `stream` in our format, with the trace context filled in."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(process) if json else TextFormatter(process))
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str = "INFO", *, process: str, json: bool = False) -> None:
    """Send records to stderr, as text lines or (`json=True`, LOG_FORMAT=json) JSON objects."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(sys.stderr, process=process, json=json)]
    root.setLevel(level)
    # aiohttp's access log is replaced by our own request metrics; nats-py is chatty at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
