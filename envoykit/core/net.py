"""Loopback port helpers for servers and tests."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class FreePorts:
    """Hands out distinct free TCP ports on one host.

    :func:`free_port` asks the kernel for a port that is free *now*; asked twice in a row it may
    answer the same port, since nothing holds it in between. A mesh on free ports needs a dozen
    distinct ones, so this remembers what it gave.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.given: set[int] = set()

    def take(self) -> int:
        """A port that was free at the call and that this allocator never gave before.

        Raises:
            RuntimeError: the kernel kept answering ports already given (should not happen).
        """
        for _ in range(1000):
            port = free_port(self.host)
            if port not in self.given:
                self.given.add(port)
                return port
        raise RuntimeError("no new free port after 1000 tries")


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    """Block until a TCP connect to ``host:port`` succeeds.

    Raises:
        TimeoutError: nothing listened within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)
