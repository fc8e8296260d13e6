"""Print events live as they are published, until Ctrl-C.

python -m ops tail [--type tts.synthesis.failed] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from common.config import Settings
from events.bus import EventBus
from events.replay import follow_events
from ops.replay import render


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON envelope per line")
    parser.add_argument("--type", action="append", help="only this event type (repeatable)")


def announce() -> None:
    print("# following events (Ctrl-C to stop)", file=sys.stderr, flush=True)


async def _tail(args: argparse.Namespace) -> int:
    bus = await EventBus.connect(Settings.from_env().nats_urls, name="voicerelay-ops-tail")
    types = set(args.type or ())
    try:
        async for event in follow_events(bus, on_subscribed=announce):
            if not types or event.type in types:
                print(render(event, args.json), flush=True)
    finally:
        await bus.close()
    return 0


def run(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_tail(args))
    return 0
