"""Conformance of the lean unary gRPC server with grpcio's client and at the HTTP/2 frame level.

Through real Envoy (envoy_grpc client): tests/core/test_unary_envoy.py, and every authz and
ratelimit test, which run on this server by default.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import ngh2
import pytest
from google.protobuf.wrappers_pb2 import BytesValue
from grpc_health.v1 import health_pb2, health_pb2_grpc

from envoykit.core.unary import GrpcStatusError, Limits, StatusCode, UnaryMethod, UnaryServer
from tests.core.unaryhelpers import RawClient, ServerThread, headers_of, stream_done


class Probe:
    """Handlers of the test service; counts calls in flight to check the stream limit."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0

    def echo(self, req: BytesValue) -> BytesValue:
        return BytesValue(value=req.value)

    def big(self, req: BytesValue) -> bytes:
        return BytesValue(value=b"x" * int(req.value)).SerializeToString()

    def fail(self, req: BytesValue) -> BytesValue:
        if req.value == b"status":
            raise GrpcStatusError(StatusCode.PERMISSION_DENIED, "no entry: 100% ünïcode\nline")
        raise RuntimeError("boom")

    async def _slow(self, seconds: float) -> BytesValue:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.in_flight -= 1
        return BytesValue(value=b"slept")

    def slow(self, req: BytesValue) -> object:
        return self._slow(float(req.value))

    def methods(self) -> list[UnaryMethod]:
        return [
            UnaryMethod("/test.Echo/Echo", BytesValue, self.echo),
            UnaryMethod("/test.Echo/Big", BytesValue, self.big),
            UnaryMethod("/test.Echo/Fail", BytesValue, self.fail),
            UnaryMethod("/test.Echo/Slow", BytesValue, self.slow),
        ]


def _stub(ch: grpc.Channel, name: str) -> grpc.UnaryUnaryMultiCallable:
    return ch.unary_unary(
        f"/test.Echo/{name}",
        request_serializer=BytesValue.SerializeToString,
        response_deserializer=BytesValue.FromString,
    )


@pytest.fixture
def served() -> Iterator[ServerThread]:
    probe = Probe()
    with ServerThread(probe.methods(), limits=Limits(max_receive_message_bytes=8 * 1024 * 1024)) as st:
        st.probe = probe  # type: ignore[attr-defined]
        yield st


def test_round_trip_status_and_message(served: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        assert _stub(ch, "Echo")(BytesValue(value=b"hello"), timeout=5).value == b"hello"
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Fail")(BytesValue(value=b"status"), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "no entry: 100% ünïcode\nline"  # percent-encoding round trip
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Fail")(BytesValue(value=b"crash"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Nope")(BytesValue(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # the server lives on after all of that
        assert _stub(ch, "Echo")(BytesValue(value=b"again"), timeout=5).value == b"again"


def test_flow_control_both_ways_with_large_messages(served: ServerThread) -> None:
    # 3 MiB in: more than the 1 MiB stream window, so the client waits for WINDOW_UPDATEs;
    # 3 MiB out: more than grpcio's initial window, so the server waits for the client's.
    payload = bytes(range(256)) * (3 * 4096)
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        assert _stub(ch, "Echo")(BytesValue(value=payload), timeout=20).value == payload
        big = _stub(ch, "Big")(BytesValue(value=str(3 * 1024 * 1024).encode()), timeout=20)
        assert len(big.value) == 3 * 1024 * 1024


def test_message_size_limits() -> None:
    probe = Probe()
    limits = Limits(max_receive_message_bytes=1024, max_send_message_bytes=2048)
    with (
        ServerThread(probe.methods(), limits=limits) as st,
        grpc.insecure_channel(f"127.0.0.1:{st.port}") as ch,
    ):
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Echo")(BytesValue(value=b"x" * 5000), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Big")(BytesValue(value=b"4000"), timeout=5)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _stub(ch, "Echo")(BytesValue(value=b"x" * 500), timeout=5).value == b"x" * 500


def test_grpc_timeout_is_enforced_by_the_server(served: ServerThread) -> None:
    raw = RawClient(served.port)
    try:
        body = BytesValue(value=b"2").SerializeToString()
        sid = raw.request(
            "/test.Echo/Slow", b"\0" + len(body).to_bytes(4, "big") + body, [(b"grpc-timeout", b"150m")]
        )
        start = time.monotonic()
        events = raw.read_until(stream_done(sid))
        took = time.monotonic() - start
        assert headers_of(events, sid)[b"grpc-status"] == b"4"  # DEADLINE_EXCEEDED, from the server
        assert 0.1 < took < 1.5
    finally:
        raw.close()
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            _stub(ch, "Slow")(BytesValue(value=b"2"), timeout=0.2)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_waiting_handlers_do_not_stall_others(served: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        slow = _stub(ch, "Slow").future(BytesValue(value=b"1.0"), timeout=5)
        time.sleep(0.1)
        start = time.monotonic()
        for _ in range(20):
            _stub(ch, "Echo")(BytesValue(value=b"quick"), timeout=5)
        assert time.monotonic() - start < 0.9  # answered while the slow call waits
        assert slow.result().value == b"slept"


def test_max_concurrent_streams_is_advertised_and_held() -> None:
    probe = Probe()
    with ServerThread(probe.methods(), limits=Limits(max_concurrent_streams=4)) as st:
        raw = RawClient(st.port)
        settings = raw.read_until(lambda ev: any(isinstance(e, ngh2.SettingsReceived) for e in ev))
        got = next(e for e in settings if isinstance(e, ngh2.SettingsReceived)).settings
        assert got[ngh2.Setting.MAX_CONCURRENT_STREAMS] == 4
        raw.close()
        with grpc.insecure_channel(f"127.0.0.1:{st.port}") as ch, ThreadPoolExecutor(16) as pool:
            calls = [pool.submit(_stub(ch, "Slow"), BytesValue(value=b"0.1"), timeout=20) for _ in range(16)]
            assert [c.result().value for c in calls] == [b"slept"] * 16
        assert probe.max_in_flight == 4


def test_ping_is_acknowledged_and_keepalive_clients_stay(served: ServerThread) -> None:
    raw = RawClient(served.port)
    try:
        raw.h2.ping(b"12345678")
        raw.flush()
        events = raw.read_until(lambda ev: any(isinstance(e, ngh2.PingAcknowledged) for e in ev))
        ack = next(e for e in events if isinstance(e, ngh2.PingAcknowledged))
        assert ack.opaque_data == b"12345678"
    finally:
        raw.close()
    opts = [("grpc.keepalive_time_ms", 200), ("grpc.keepalive_permit_without_calls", 1)]
    with grpc.insecure_channel(f"127.0.0.1:{served.port}", options=opts) as ch:
        for _ in range(3):
            assert _stub(ch, "Echo")(BytesValue(value=b"k"), timeout=5).value == b"k"
            time.sleep(0.3)


def test_not_grpc_and_not_http2_are_refused(served: ServerThread) -> None:
    raw = RawClient(served.port)
    try:
        sid = raw.h2.send_request(
            [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/test.Echo/Echo"),
             (b":authority", b"t"), (b"content-type", b"application/json")],
            end_stream=True,
        )  # fmt: skip
        raw.flush()
        events = raw.read_until(stream_done(sid))
        assert headers_of(events, sid)[b":status"] == b"415"
        body = b"\x01\x00\x00\x00\x01x"  # compressed flag without a grpc-encoding
        sid = raw.request("/test.Echo/Echo", body)
        assert headers_of(raw.read_until(stream_done(sid)), sid)[b"grpc-status"] == b"12"
        sid = raw.request("/test.Echo/Echo", b"\x00\x00\x00\x00\x09short")  # length says 9, 5 came
        assert headers_of(raw.read_until(stream_done(sid)), sid)[b"grpc-status"] == b"13"
        sid = raw.request("/test.Echo/Echo", b"", [(b"grpc-timeout", b"soon")])
        assert headers_of(raw.read_until(stream_done(sid)), sid)[b"grpc-status"] == b"13"
    finally:
        raw.close()
    import socket

    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):  # the server closes the connection
            data += chunk
        assert b"HTTP/1.1 200" not in data


def test_health_check_on_the_same_port(served: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", "test.Echo", "grpc.health.v1.Health"):
            r = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="other.Service"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            next(iter(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_drain_finishes_calls_in_flight_then_goaway_and_close() -> None:
    probe = Probe()
    st = ServerThread(probe.methods()).__enter__()
    try:
        raw = RawClient(st.port)
        body = BytesValue(value=b"0.5").SerializeToString()
        sid = raw.request("/test.Echo/Slow", b"\0" + len(body).to_bytes(4, "big") + body)
        time.sleep(0.1)
        stopper = threading.Thread(target=st.stop, args=(3.0,))
        stopper.start()
        events = raw.read_until(lambda ev: "EOF" in ev, timeout=10)
        stopper.join(10)
        assert headers_of(events, sid)[b"grpc-status"] == b"0"  # the call in flight finished
        goaways = [e for e in events if isinstance(e, ngh2.GoAwayReceived)]
        assert goaways and goaways[-1].last_stream_id == sid and goaways[-1].error_code == 0
        raw.close()
        with pytest.raises(OSError):  # the listener is closed: no new connections
            RawClient(st.port)
    finally:
        st.__exit__(None, None, None)


def test_a_second_server_on_a_taken_address_fails_naming_it(served: ServerThread) -> None:
    other = UnaryServer("second", f"127.0.0.1:{served.port}")
    with pytest.raises(OSError, match=rf"address in use: 127\.0\.0\.1:{served.port}"):
        asyncio.run(other.start())
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as ch:  # the first still serves
        assert _stub(ch, "Echo")(BytesValue(value=b"mine"), timeout=5).value == b"mine"


def test_many_concurrent_calls_from_grpc_aio() -> None:
    probe = Probe()

    async def run(port: int) -> list[bytes]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary(
                "/test.Echo/Echo",
                request_serializer=BytesValue.SerializeToString,
                response_deserializer=BytesValue.FromString,
            )
            got = await asyncio.gather(
                *(call(BytesValue(value=str(i).encode()), timeout=20) for i in range(300))
            )
            return [g.value for g in got]

    with ServerThread(probe.methods()) as st:
        assert asyncio.run(run(st.port)) == [str(i).encode() for i in range(300)]


_FREEZE_PROBE = """
import gc, os, signal
from envoykit.core.unary import UnaryServer, serve_unary_forever
def ready(server):
    print("frozen", gc.get_freeze_count(), len(gc.get_objects()), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
serve_unary_forever(lambda: UnaryServer("probe", "127.0.0.1:0"), grace=0.1, on_ready=ready)
"""


def test_a_started_server_has_frozen_its_start_up_heap() -> None:
    # A full collection walks every tracked object; frozen ones are skipped (gc.freeze), so what a
    # collection walks after start is only what was allocated since.
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("frozen "))
    frozen, tracked = (int(x) for x in line.split()[1:])
    assert frozen > 10_000 and tracked < frozen / 10
