"""Print events live as they are published, until Ctrl-C.

python -m ops tail [--type tts.synthesis.failed] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from events.replay import follow_events, open_sealed
from events.state import SharedState
from ops.replay import connect, render


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument("--type", action="append", help="only this event type (repeatable)")


def announce() -> None:
    print("# following events (Ctrl-C to stop)", file=sys.stderr, flush=True)


async def _tail(args: argparse.Namespace) -> int:
    bus = await connect()
    keys, types = SharedState(bus).user_keys, set(args.type or ())
    try:
        async for event in follow_events(bus, on_subscribed=announce):
            if not types or event.type in types:
                [opened] = await open_sealed([event], keys)  # texts, or [erased] (events/sealing.py)
                print(render(opened, args.json), flush=True)
    finally:
        await bus.close()
    return 0


def run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_tail(args))
    return 0
