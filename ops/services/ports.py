"""Ports for local services: a free port or a block of them on loopback, never one this process handed
out before (two fixtures picking ports back to back), and the check `ops up` makes before it starts
anything, naming the service and the variable that moves it when a port is taken.
"""

from __future__ import annotations

import random
import socket

from ops.services.processes import LOCALHOST, ServiceError

# Ports handed out by this process; a second free_port() call never returns one of them again, even
# before the first owner has bound it (two fixtures picking ports back to back).
_handed_out: set[int] = set()


class PortInUse(ServiceError):
    """A port the stack needs is taken by another process."""


def _bindable(port: int, host: str) -> bool:
    """Whether a server could listen on host:port now.

    SO_REUSEADDR mirrors what nats-server, weed and aiohttp set, so a port held only by TIME_WAIT
    connections of a previous run counts as free, while any listener on it (or on 0.0.0.0) does not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the kernel reports free on `host`, never one this process handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_port_block(count: int, *, offset: int = 0, host: str = LOCALHOST) -> int:
    """The first of `count` consecutive free ports whose `port + offset` twins are free as well.

    Random in 20000–45000 so that several test sessions on one machine rarely collide, and so that
    the twins (SeaweedFS puts each gRPC port at HTTP port + 10000) stay below 65536.
    """
    for _ in range(200):
        first = random.randrange(20000, 45000 - count)
        wanted = [first + i for i in range(count)]
        if offset:
            wanted += [port + offset for port in wanted]
        if not _handed_out.intersection(wanted) and all(_bindable(port, host) for port in wanted):
            _handed_out.update(wanted)
            return first
    raise ServiceError(f"found no block of {count} free ports (offset {offset}) on {host}")


def ensure_port_free(port: int, what: str, host: str = LOCALHOST, *, env_var: str | None = None) -> None:
    """Raise PortInUse, naming the service and the knob that moves it, when `port` is taken."""
    if _bindable(port, host):
        return
    remedy = f"set {env_var}" if env_var else "choose another port"
    raise PortInUse(f"port {port} ({what}) is already in use on {host} — stop the other process or {remedy}")
