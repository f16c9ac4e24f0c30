"""core: the binding rule — one server per address; only its own workers (holding its reservation) share it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from envoykit.core import AddressInUse, AioGrpcServer, SyncGrpcServer, bind_exclusive
from envoykit.core.bind import RESERVED_FD_ENV, reserved_by_parent, split_address


def _reuseport_bind(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        raise
    s.listen()
    return s


def test_second_bind_fails_naming_the_address() -> None:
    with bind_exclusive("127.0.0.1:0") as first:
        address = f"127.0.0.1:{first.getsockname()[1]}"
        with pytest.raises(AddressInUse) as e:
            bind_exclusive(address)
        assert str(e.value) == f"address in use: {address} (another process serves it)"
        with pytest.raises(OSError):  # not even a SO_REUSEPORT socket joins an exclusive listener
            _reuseport_bind(first.getsockname()[1])


def test_split_address() -> None:
    assert split_address("127.0.0.1:9191") == ("127.0.0.1", 9191)
    assert split_address("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="not a host:port"):
        split_address("localhost")


def test_grpc_servers_refuse_a_served_address() -> None:
    with bind_exclusive("127.0.0.1:0") as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(AddressInUse, match=f"address in use: {address}"):
            SyncGrpcServer("t", address).start()


async def test_async_grpc_server_refuses_a_served_address() -> None:
    first = AioGrpcServer("first", "127.0.0.1:0")
    port = await first.start()
    try:
        with pytest.raises(AddressInUse, match=f"127.0.0.1:{port}"):
            await AioGrpcServer("second", f"127.0.0.1:{port}").start()
    finally:
        await first.stop(0)


WORKER = textwrap.dedent(
    """
    import sys
    from envoykit.core import SyncGrpcServer
    from envoykit.core.bind import reserved_by_parent
    address = sys.argv[1]
    print(reserved_by_parent(address), flush=True)
    server = SyncGrpcServer("worker", address)
    server.start()
    print("READY", flush=True)
    sys.stdin.read()
    server.stop(0)
    """
)


def _worker(address: str, fd: int | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != RESERVED_FD_ENV}
    if fd is not None:
        env[RESERVED_FD_ENV] = str(fd)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, address],
        env=env,
        pass_fds=() if fd is None else (fd,),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_only_workers_holding_the_reservation_share_the_port() -> None:
    assert not reserved_by_parent("127.0.0.1:1")  # this process holds none
    with bind_exclusive("127.0.0.1:0", listen=False, share_with_workers=True) as reservation:
        port = reservation.getsockname()[1]
        address = f"127.0.0.1:{port}"
        workers = [_worker(address, reservation.fileno()) for _ in range(2)]
        try:
            for w in workers:
                assert w.stdout is not None
                assert w.stdout.readline().strip() == "True"
                lines = [w.stdout.readline() for _ in range(2)]  # the server's log line, then READY
                assert "READY" in lines[-1], lines
            stranger = _worker(address, None)  # same user, same code, no reservation
            out, err = stranger.communicate(timeout=30)
            assert stranger.returncode != 0 and out.startswith("False")
            assert f"AddressInUse: address in use: {address}" in err
            with pytest.raises(AddressInUse):  # nor another reservation
                bind_exclusive(address, listen=False, share_with_workers=True)
            with pytest.raises(AddressInUse):
                bind_exclusive(address)
        finally:
            for w in workers:
                w.communicate("", timeout=30)
        assert [w.returncode for w in workers] == [0, 0]
