"""Print events from the stream (the audit log), oldest first.

python -m ops replay task <task_id>     the task's timeline: one line per event
"""

from __future__ import annotations

import argparse
import asyncio
import json

import msgspec

from common.config import Settings
from events.bus import EventBus
from events.replay import describe, task_timeline


def configure(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="<target>", required=True)
    task = targets.add_parser("task", help="one task's events in order")
    task.add_argument("task_id")
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")


async def _replay_task(task_id: str, as_json: bool) -> int:
    settings = Settings.from_env()
    bus = await EventBus.connect(settings.nats_urls, name="voicerelay-ops")
    try:
        events = await task_timeline(bus, task_id)
    finally:
        await bus.close()
    if not events:
        print(f"no events for task {task_id}")
        return 1
    for event in events:
        print(json.dumps(msgspec.to_builtins(event), ensure_ascii=False) if as_json else describe(event))
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_replay_task(args.task_id, args.json))
