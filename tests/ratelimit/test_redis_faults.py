"""Redis faults against real processes: a paused Redis (CLIENT PAUSE) under 32 concurrent clients must
not hold any call past the store timeout (plus a small margin), connections stay bounded, Envoy applies
its failure mode within the timeout, a paused cluster node is bounded the same way, and the health
endpoints follow the store and the drain."""

from __future__ import annotations

import contextlib
import signal
import statistics
import threading
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.ratelimit.v3 import rls_pb2_grpc

from tests.ratelimit.helpers import OK, descriptor, request
from tests.ratelimit.redisproc import RedisServer

pytestmark = pytest.mark.redis

TIMEOUT_MS = 300
MARGIN_S = 0.3  # thread hand-offs and a busy 2-core machine
CLIENTS = 32
PAUSE_MS = 3000


def _limits(tmp_path: Path) -> Path:
    d = tmp_path / "limits"
    d.mkdir(exist_ok=True)
    (d / "web.yaml").write_text(
        "domain: web\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 1000000}\n"
    )
    return d


def _clients(redis: RedisServer) -> int:
    for line in redis.cli("INFO", "clients").splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1]) - 1  # less the INFO call's own connection
    raise AssertionError("no connected_clients in INFO")


def test_paused_redis_answers_every_call_within_the_store_timeout(
    tmp_path: Path,
    ratelimit,  # type: ignore[no-untyped-def]
    redis_server: RedisServer,
) -> None:
    rl = ratelimit(_limits(tmp_path), "--redis-url", redis_server.url, "--store-timeout-ms", str(TIMEOUT_MS))
    req = request("web", descriptor(("client", "paused")))
    calls: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{rl.port}") as ch:
            stub = rls_pb2_grpc.RateLimitServiceStub(ch)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    r = stub.ShouldRateLimit(req, timeout=10)
                    outcome = "ok" if r.overall_code == OK else "over"
                except grpc.RpcError as exc:
                    outcome = exc.code().name
                with lock:
                    calls.append((t0, time.monotonic() - t0, outcome))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # every client answered from a healthy Redis first
    paused_at = time.monotonic()
    redis_server.cli("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
    time.sleep(PAUSE_MS / 1000 + 1.5)  # the pause, then recovery
    stop.set()
    for t in threads:
        t.join(15)
    during = [c for c in calls if paused_at <= c[0] < paused_at + PAUSE_MS / 1000 - 0.1]
    after = [c for c in calls if c[0] > paused_at + PAUSE_MS / 1000 + 1.0]
    seconds = [s for _, s, _ in calls]
    worst = max(seconds)
    print(
        f"\npaused Redis, {CLIENTS} clients, store timeout {TIMEOUT_MS} ms: {len(calls)} calls, "
        f"{len(during)} during the pause ({sum(o == 'UNAVAILABLE' for *_, o in during)} UNAVAILABLE); "
        f"max call {worst * 1000:.0f} ms, p50 {statistics.median(seconds) * 1000:.1f} ms, "
        f"p99 {statistics.quantiles(seconds, n=100)[98] * 1000:.1f} ms"
    )
    assert worst <= TIMEOUT_MS / 1000 + MARGIN_S, f"a call took {worst:.3f}s"
    assert during and {o for *_, o in during} <= {"ok", "UNAVAILABLE"}
    assert sum(o == "UNAVAILABLE" for *_, o in during) > len(during) // 2
    assert after and all(o == "ok" for *_, o in after), {o for *_, o in after}
    assert _clients(redis_server) <= 3  # round trips, probes, health: not one per caller
    assert "store failed" in rl.log()


@pytest.mark.envoy
def test_paused_redis_applies_the_failure_mode_within_the_timeout(
    tmp_path: Path,
    envoy,  # type: ignore[no-untyped-def]
    echo,
    ratelimit,
    redis_server: RedisServer,
) -> None:
    import httpx

    from envoykit.core import free_port
    from tests.ratelimit.rlproc import envoy_config

    rl = ratelimit(_limits(tmp_path), "--redis-url", redis_server.url, "--store-timeout-ms", str(TIMEOUT_MS))
    deny, allow = free_port(), free_port()
    envoy(envoy_config([(deny, True), (allow, False)], [rl.port], echo.port))

    def get(port: int) -> tuple[int, float]:
        t0 = time.monotonic()
        r = httpx.get(f"http://127.0.0.1:{port}/x", headers={"x-client": "paused"}, timeout=10)
        return r.status_code, time.monotonic() - t0

    healthy = [get(port) for port in (deny, allow) for _ in range(3)]
    assert {code for code, _ in healthy} == {200}
    baseline = max(s for _, s in healthy)  # this machine's round trip through Envoy, right now
    redis_server.cli("CLIENT", "PAUSE", "5000", "ALL")  # longer than Envoy's 2 s filter timeout
    paused = [get(deny), get(allow), get(deny), get(allow)]
    print(
        f"\nthrough Envoy, Redis paused: {[(c, round(s * 1000)) for c, s in paused]} (code, ms); "
        f"healthy max {baseline * 1000:.0f} ms; store timeout {TIMEOUT_MS} ms"
    )
    assert [c for c, _ in paused] == [500, 200, 500, 200]  # failure_mode_deny true / false
    assert max(s for _, s in paused) <= TIMEOUT_MS / 1000 + MARGIN_S + baseline


def test_health_endpoints_follow_the_store_and_the_drain(
    tmp_path: Path,
    ratelimit,  # type: ignore[no-untyped-def]
    redis_server: RedisServer,
) -> None:
    import httpx

    rl = ratelimit(_limits(tmp_path), "--redis-url", redis_server.url, "--store-timeout-ms", "2000")

    def probe(path: str) -> tuple[int, str]:
        r = httpx.get(f"http://127.0.0.1:{rl.metrics_port}{path}", timeout=10)
        return r.status_code, r.text.strip()

    assert [probe(p)[0] for p in ("/healthcheck", "/readyz", "/healthz")] == [200] * 3
    assert probe("/json")[0] == 404 and probe("/")[0] == 404
    assert "envoykit_ratelimit" in probe("/metrics")[1]
    redis_server.stop()
    code, text = probe("/healthcheck")
    assert code == 503 and text.startswith("store: redis: ConnectionError"), text
    assert probe("/healthz")[0] == 200  # alive: only readiness follows the store
    redis_server.start()  # same port
    deadline = time.monotonic() + 15
    while probe("/healthcheck")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe("/healthcheck") == (200, "OK")
    # draining: a call held by a paused Redis keeps the server in its grace period
    req = request("web", descriptor(("client", "drain")))
    redis_server.cli("CLIENT", "PAUSE", "3000", "ALL")
    # the call answers UNAVAILABLE after the 2 s store timeout
    held = threading.Thread(target=lambda: _call_quietly(rl.port, req), daemon=True)
    held.start()
    time.sleep(0.3)
    assert rl.proc is not None
    rl.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert probe("/healthcheck") == (503, "draining") and probe("/healthz") == (503, "draining")
    held.join(10)
    assert rl.proc.wait(15) == 0


def _call_quietly(port: int, req: object) -> None:
    # UNAVAILABLE is expected here
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, contextlib.suppress(grpc.RpcError):
        rls_pb2_grpc.RateLimitServiceStub(ch).ShouldRateLimit(req, timeout=10)


def test_paused_cluster_node_bounds_every_call(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    from envoykit.ratelimit.algorithms import Algorithm, Hit
    from envoykit.ratelimit.stores import StoreError
    from envoykit.ratelimit.stores.redis import RedisClusterStore

    st = RedisClusterStore(redis_cluster.url, timeout_s=TIMEOUT_MS / 1000)
    hits = [Hit(f"ekrl:{{p{i}}}|f60", 1, 10**6, 60_000, Algorithm.FIXED_WINDOW) for i in range(12)]

    def call(_: int) -> tuple[float, str]:
        t0 = time.monotonic()
        try:
            st.apply(hits, int(time.time() * 1000))
            outcome = "ok"
        except StoreError:
            outcome = "error"
        return time.monotonic() - t0, outcome

    try:
        assert call(0)[1] == "ok"  # the keys span every node, several slots on each
        redis_cluster.nodes[0].cli("CLIENT", "PAUSE", "2000", "ALL")
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(call, range(CLIENTS * 4)))
        worst = max(s for s, _ in results)
        print(f"\npaused cluster node, {CLIENTS} threads: max call {worst * 1000:.0f} ms")
        assert worst <= TIMEOUT_MS / 1000 + MARGIN_S
        assert "error" in {o for _, o in results}
        time.sleep(2.5)
        deadline = time.monotonic() + 10
        while call(0)[1] != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert call(0)[1] == "ok"
    finally:
        st.close()
