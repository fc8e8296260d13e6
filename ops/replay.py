"""Print events from the stream (the audit log), oldest first.

python -m ops replay task <task_id>                  one task's timeline
python -m ops replay --since 1h [--type tts.synthesis.failed]   the log, filtered
python -m ops replay --redrive [--since 1h] [--task <task_id> ...] [--dry-run]
                                                     run failed tasks again from their original request
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import msgspec

from common.config import Settings
from events.bus import EventBus
from events.envelope import Envelope
from events.replay import describe, open_sealed, read_events, task_timeline
from events.state import SharedState
from ops.redrive import redrive_failed, redrive_tasks

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> float:
    """`90s`, `15m`, `1h`, `7d` -> seconds."""
    match = _DURATION.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 30m, 1h or 7d, got {value!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument("--since", type=parse_since, help="only events this recent, e.g. 1h")
    parser.add_argument("--type", action="append", help="only this event type (repeatable)")
    parser.add_argument(
        "--redrive",
        action="store_true",
        help="publish the original request of failed tasks again (each once; recorded as an event)",
    )
    parser.add_argument(
        "--task", dest="tasks", action="append", metavar="TASK_ID", help="with --redrive: only this task"
    )
    parser.add_argument("--dry-run", action="store_true", help="with --redrive: say what would be done")
    targets = parser.add_subparsers(dest="target", metavar="<target>")
    task = targets.add_parser("task", help="one task's events in order")
    task.add_argument("task_id")


def render(event: Envelope, as_json: bool) -> str:
    return json.dumps(msgspec.to_builtins(event), ensure_ascii=False) if as_json else describe(event)


async def connect() -> EventBus:
    """The bus with its topology, as this deployment's settings have it (KV is read: keys, tasks)."""
    settings = Settings.from_env()
    bus = await EventBus.connect(settings.nats_urls, name="voicerelay-ops")
    try:
        await bus.ensure_topology(
            audit_max_age_s=settings.audit_max_age_s, output_max_age_s=settings.output_max_age_s
        )
    except BaseException:
        await bus.close()
        raise
    return bus


async def _redrive(args: argparse.Namespace) -> int:
    bus = await connect()
    try:
        state = SharedState(bus)
        if args.tasks:
            lines = await redrive_tasks(bus, state, args.tasks, dry_run=args.dry_run)
        else:
            since_s = None if args.since is None else time.time() - args.since
            lines = await redrive_failed(bus, state, since_s=since_s, dry_run=args.dry_run)
    finally:
        await bus.close()
    for line in lines:
        print(line, flush=True)
    return 0


async def _replay(args: argparse.Namespace) -> int:
    bus = await connect()
    types = set(args.type or ())
    try:
        if args.target == "task":
            events = await task_timeline(bus, args.task_id)
            if not events:
                print(f"no events for task {args.task_id}")
                return 1
        else:
            since_s = None if args.since is None else time.time() - args.since
            events = [
                e
                async for e in read_events(
                    bus, since_s=since_s, accept=lambda e: not types or e.type in types
                )
            ]
        # Texts are sealed per user; an erased user's read [erased] (events/sealing.py).
        events = await open_sealed(events, SharedState(bus).user_keys)
    finally:
        await bus.close()
    for event in events:
        if not types or event.type in types:
            print(render(event, args.json), flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.redrive:
        if args.target or args.type or args.json:
            print("--redrive takes only --since, --task and --dry-run", file=sys.stderr)
            return 2
        return asyncio.run(_redrive(args))
    if args.tasks or args.dry_run:
        print("--task and --dry-run go with --redrive", file=sys.stderr)
        return 2
    return asyncio.run(_replay(args))
