"""Shared fixtures: real services on random ports, started once per session, always torn down.

Infrastructure first (NATS, S3); fixtures for our own processes build on these further down.

Every test is marked either `stack` or `unit`: `stack` when it uses a service fixture (found from its
fixture closure, so nobody has to remember) or its module says `pytestmark = pytest.mark.stack`
(it starts processes itself); `upstream` when it runs upstream CosyVoice in its own environment
(tests/test_cosyvoice3_upstream.py); `unit` otherwise. `pytest -m unit` is the fast feedback loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ops.services.nats import NatsServer
from ops.services.s3 import SeaweedS3

# The fixtures that start services: the session stack's, and the fault stack's (tests/fault_stack.py).
_SERVICE_FIXTURES = frozenset({"nats_server", "s3_server", "fault_infra"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses_services = _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_services and item.get_closest_marker("stack") is None:
            item.add_marker(pytest.mark.stack)
        if item.get_closest_marker("stack") is None and item.get_closest_marker("upstream") is None:
            item.add_marker(pytest.mark.unit)


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
