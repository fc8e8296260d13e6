"""The `ops` command line: one argparse sub-command per verb, each implemented in its own module.

A verb module provides `configure(parser)` (adds its arguments) and `run(args) -> int` (the exit
status). Adding a verb is one `Verb(...)` line in VERBS.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    module: str
    help: str


VERBS: tuple[Verb, ...] = (
    Verb("up", "ops.up", "run the whole local stack in the foreground; Ctrl-C stops it"),
    Verb("replay", "ops.replay", "print events from the stream, e.g. one task's timeline"),
    Verb("tail", "ops.tail", "print events live as they are published"),
    Verb("doctor", "ops.doctor", "check NATS, the stream and consumers, S3, WeChat settings and the engine"),
    Verb(
        "bench",
        "ops.bench.cli",
        "measure: pipeline vs the seed design (default); voices: engine, intake, similarity",
    ),
    Verb("demo", "ops.demo", "do what a mini program does against a running stack, end to end"),
    Verb(
        "gpu-smoke",
        "ops.gpu_smoke",
        "stream CosyVoice3 on this GPU in every mode and N at once; print latency and RTF, write WAVs",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """Every verb's sub-parser, so `--help` at either level is complete."""
    parser = argparse.ArgumentParser(prog="python -m ops", description="VoiceRelay operator tools.")
    subparsers = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for verb in VERBS:
        module = importlib.import_module(verb.module)
        sub = subparsers.add_parser(verb.name, help=verb.help, description=module.__doc__)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the verb named on the command line and return its exit status."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))
