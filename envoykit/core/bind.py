"""Exclusive binding: an address is served by one server — its own workers may share it, nobody else.

The rule every envoykit server follows. A plain bind (``SO_REUSEADDR`` only, so a restart is not blocked
by connections in TIME_WAIT) fails while any other socket listens on the address, and the failure is
:class:`AddressInUse` naming it. ``SO_REUSEPORT`` would let a second server by the same user join the
port and silently take part of the traffic (with its own counters and policy), so it is never set
before the bind; a server with worker processes sets it *after* its exclusive bind, on a socket it
keeps, and hands that socket to its workers (:data:`RESERVED_FD_ENV`): only a process holding it may
join with ``SO_REUSEPORT`` (:func:`reserved_by_parent`). A server that can accept on an inherited
socket simply gives its workers the listening socket from :func:`bind_exclusive`.

Linux semantics: socket(7) ``SO_REUSEADDR``/``SO_REUSEPORT``.
"""

from __future__ import annotations

import errno
import os
import socket

RESERVED_FD_ENV = "ENVOYKIT_RESERVED_FD"
"""Environment variable naming the file descriptor of the parent's reservation, in a worker."""


class AddressInUse(OSError):
    """Another process already serves ``address`` (``host:port``); ``str()`` says so and names it."""

    def __init__(self, address: str) -> None:
        super().__init__(errno.EADDRINUSE, f"address in use: {address} (another process serves it)")
        self.address = address

    def __str__(self) -> str:
        return str(self.strerror)


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → ``(host, port)``.

    Raises:
        ValueError: no port, or the port is not a number in 0..65535.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def bind_exclusive(
    address: str, *, listen: bool = True, share_with_workers: bool = False, backlog: int = 1024
) -> socket.socket:
    """Bind a TCP socket on ``address`` that no other process may share.

    Args:
        address: ``host:port``; port 0 picks a free port (read it with ``getsockname()``).
        listen: start listening (``backlog`` pending connections); a server that accepts on this
            socket, or hands it to pre-forked workers, wants that.
        share_with_workers: set ``SO_REUSEPORT`` after the bind, so worker processes given this socket
            (see :data:`RESERVED_FD_ENV`) can bind the same address with ``SO_REUSEPORT``. Keep the socket
            open (not listening) for as long as the workers serve.

    Returns:
        The bound socket (inheritable, so it can be handed to workers).

    Raises:
        AddressInUse: any other socket listens on ``address``.
        OSError: any other bind failure (no such local address, permission).
        ValueError: ``address`` is not ``host:port``.
    """
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(address) from None
            raise
        if share_with_workers:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listen:
            sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def reserved_by_parent(address: str) -> bool:
    """True when this process is a worker holding its parent's reservation of ``address``.

    The parent passes the socket from ``bind_exclusive(..., share_with_workers=True)`` (``pass_fds``) and
    its number in :data:`RESERVED_FD_ENV`; the socket must be bound to exactly ``address``.
    """
    fd = os.environ.get(RESERVED_FD_ENV, "")
    if not fd.isdigit():
        return False
    try:
        with socket.socket(fileno=os.dup(int(fd))) as held:
            bound = held.getsockname()
            shared = held.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    except OSError:
        return False
    host, port = split_address(address)
    return bool(shared) and port == bound[1] and socket.getaddrinfo(host, None)[0][4][0] == bound[0]
