"""Free loopback ports for a whole mesh at once, each handed out once.

``free_port()`` asks the kernel for a port that is free *now*; asked twice in a row it may answer the
same port, since nothing holds it in between. A mesh on free ports needs a dozen distinct ones, so
:class:`FreePorts` remembers what it gave.
"""

from __future__ import annotations

from envoykit.core import free_port


class FreePorts:
    """Hands out distinct free TCP ports on 127.0.0.1."""

    def __init__(self) -> None:
        self.given: set[int] = set()

    def take(self) -> int:
        """A port that was free at the call and that this allocator never gave before.

        Raises:
            RuntimeError: the kernel kept answering ports already given (should not happen).
        """
        for _ in range(1000):
            port = free_port()
            if port not in self.given:
                self.given.add(port)
                return port
        raise RuntimeError("no new free port after 1000 tries")
