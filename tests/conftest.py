"""Shared fixtures: real services on random ports, started once per session, always torn down.

Infrastructure first (NATS, S3); fixtures for our own processes build on these further down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ops.services import NatsServer, SeaweedS3

# --- infrastructure ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """nats-server with JetStream on free ports, data in a session temp dir."""
    async with NatsServer.on_free_ports(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
async def s3_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SeaweedS3]:
    """SeaweedFS S3 on a free port block, data in a session temp dir; keys as Settings' defaults."""
    async with SeaweedS3.on_free_ports(tmp_path_factory.mktemp("s3")) as server:
        yield server


# --- our own processes: gateway, worker and the WeChat emulator (tests/stack.py) ----------------------

from stack import stack  # noqa: E402, F401  (a fixture)
