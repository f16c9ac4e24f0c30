"""ShouldRateLimit semantics with a controllable clock, on the memory store and on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from envoykit.ratelimit import MemoryStore, RateLimitService, ServiceSettings, load_texts
from envoykit.ratelimit.metrics import StatsRegistry
from envoykit.ratelimit.stores.base import Store
from tests.ratelimit.helpers import OK, OVER_LIMIT, Clock, Unit, descriptor, request

CONFIG = """
domain: web
descriptors:
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 5}
  - key: vip
    rate_limit: {unlimited: true}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: ten
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: sliding
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: sliding_window}
  - key: gcra
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: gcra}
  - key: wild
    value: a*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: shared
    value: a*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: plan
    value: basic
    rate_limit: {name: basic, unit: minute, requests_per_unit: 1}
  - key: plan
    value: gold
    rate_limit: {replaces: [{name: basic}], unit: minute, requests_per_unit: 100}
  - key: backend_name
    value: b1
    quota_mode: true
    metadata: {pool: b1}
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: backend_name
    value: b2
    quota_mode: true
    metadata: {pool: b2}
    rate_limit: {unit: minute, requests_per_unit: 2}
"""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    from envoykit.ratelimit.stores.redis import RedisStore

    srv = request.getfixturevalue("redis_server")
    st = RedisStore(srv.url)
    yield st
    st.close()


def make(store: Store, clock: Clock, **settings: object) -> RateLimitService:
    cfg = load_texts([("web.yaml", CONFIG)], stats=StatsRegistry())
    return RateLimitService(lambda: cfg, store, ServiceSettings(**settings), clock=clock)  # type: ignore[arg-type]


def test_fixed_window_admits_limit_then_over(store: Store) -> None:
    clock = Clock(1_699_999_980.0 + 40)  # 40 s into a minute
    svc = make(store, clock)
    codes = []
    for _ in range(7):
        r = svc.should_rate_limit(request("web", descriptor(("client", "c1"))))
        codes.append(r.overall_code)
    assert codes == [OK] * 5 + [OVER_LIMIT] * 2
    st = r.statuses[0]
    assert (st.code, st.limit_remaining, st.current_limit.requests_per_unit) == (OVER_LIMIT, 0, 5)
    assert st.current_limit.unit == Unit.MINUTE and st.duration_until_reset.seconds == 20
    # another client has its own counter
    r = svc.should_rate_limit(request("web", descriptor(("client", "c2"))))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 4)
    clock.advance(20)  # next window
    r = svc.should_rate_limit(request("web", descriptor(("client", "c1"))))
    assert (r.overall_code, r.statuses[0].limit_remaining, r.statuses[0].duration_until_reset.seconds) == (
        OK,
        4,
        60,
    )
    stats = svc.lookup().config.stats.get("web", "client")
    assert stats is not None
    assert stats is not None
    # 8 hits, 6 within; over: 2 (past the limit); near: floor(5*.8)=4 → the 5th hit
    assert (stats.total_hits, stats.within_limit, stats.over_limit, stats.near_limit) == (9, 7, 2, 1)


def test_hits_addend(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0))
    r = svc.should_rate_limit(request("web", descriptor(("client", "x")), hits_addend=3))
    assert r.statuses[0].limit_remaining == 2
    r = svc.should_rate_limit(request("web", descriptor(("client", "x"), hits_addend=0), hits_addend=3))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 2)  # per-descriptor 0: look, do not count
    r = svc.should_rate_limit(request("web", descriptor(("client", "x"), hits_addend=3)))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OVER_LIMIT, 0)
    stats = svc.lookup().config.stats.get("web", "client")
    assert stats is not None
    # 3 within (near: 0); then 3 with 3 before: over 1, near 4-3=1... reference: near += 5 - max(4, 3) = 1
    assert (stats.over_limit, stats.near_limit, stats.within_limit) == (1, 1, 3)


def test_shadow_unlimited_replaces_and_unknown(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0))
    for _ in range(3):
        r = svc.should_rate_limit(request("web", descriptor(("shadow", "s"))))
    assert (r.overall_code, r.statuses[0].code, r.statuses[0].limit_remaining) == (OK, OK, 0)
    shadow = svc.lookup().config.stats.get("web", "shadow")
    assert shadow is not None and shadow.shadow_mode == 2
    r = svc.should_rate_limit(request("web", descriptor(("vip", "v"))))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 2**32 - 1)
    assert not r.statuses[0].HasField("current_limit")
    # gold replaces basic: basic (1/min) is not counted when both match
    for _ in range(3):
        r = svc.should_rate_limit(request("web", descriptor(("plan", "basic")), descriptor(("plan", "gold"))))
    assert r.overall_code == OK and not r.statuses[0].HasField("current_limit")
    assert r.statuses[1].limit_remaining == 97
    r = svc.should_rate_limit(request("nope", descriptor(("client", "c"))))
    assert r.overall_code == OK and not r.statuses[0].HasField("current_limit")
    with pytest.raises(ValueError, match="domain must not be empty"):
        svc.should_rate_limit(request("", descriptor(("client", "c"))))
    with pytest.raises(ValueError, match="descriptor list must not be empty"):
        svc.should_rate_limit(request("web"))


def test_global_shadow_mode_and_headers(store: Store) -> None:
    svc = make(store, Clock(1_699_999_980.0 + 30), shadow_mode=True, response_headers=True)
    for _ in range(6):
        r = svc.should_rate_limit(request("web", descriptor(("client", "h")), descriptor(("ten", "t"))))
    assert r.overall_code == OK and r.statuses[0].code == OVER_LIMIT
    headers = {h.key: h.value for h in r.response_headers_to_add}
    assert headers == {"RateLimit-Limit": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "30"}
    assert svc.lookup().config.stats.global_shadow_mode == 1
    svc2 = make(store, Clock(1_699_999_980.0 + 30), response_headers=True)
    r = svc2.should_rate_limit(request("web", descriptor(("ten", "t2")), descriptor(("client", "h2"))))
    headers = {h.key: h.value for h in r.response_headers_to_add}
    assert (
        headers["RateLimit-Limit"] == "5" and headers["RateLimit-Remaining"] == "4"
    )  # the closest to its limit


def test_wildcard_and_share_threshold_counters(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0))
    for v in ("a1", "a2"):  # separate counters without share_threshold
        r = svc.should_rate_limit(request("web", descriptor(("wild", v))))
        assert r.statuses[0].limit_remaining == 1
    codes = []
    for v in ("a1", "a2", "a3"):  # one shared counter
        r = svc.should_rate_limit(request("web", descriptor(("shared", v))))
        codes.append(r.overall_code)
    assert codes == [OK, OK, OVER_LIMIT]


def test_override_from_envoy(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0))
    d = descriptor(("client", "o"), limit=(2, Unit.HOUR))
    codes = [(svc.should_rate_limit(request("web", d))).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER_LIMIT]
    r = svc.should_rate_limit(request("web", descriptor(("client", "o"))))  # config limit: own counter
    assert r.statuses[0].limit_remaining == 4


def test_quota_mode_and_dynamic_metadata(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0), response_dynamic_metadata=True)
    both = request("web", descriptor(("backend_name", "b1")), descriptor(("backend_name", "b2")))
    r = svc.should_rate_limit(both)
    assert r.overall_code == OK
    md = r.dynamic_metadata
    assert md["domain"] == "web" and list(md["descriptors"][0]["entries"]) == ["backend_name=b1"]
    assert dict(md["metadata"]) == {"pool": "b1"}  # merged from passed descriptors; the first wins
    r = svc.should_rate_limit(both)  # b1 over (quota), b2 still has room → OK, b2 advertised
    assert r.overall_code == OK and r.statuses[0].code == OVER_LIMIT
    assert [dict(b) for b in r.dynamic_metadata["passedBackends"]] == [
        {"backend_name": "b2", "model_name_override": ""}
    ]
    assert r.dynamic_metadata["metadata"]["pool"] == "b2"
    r = svc.should_rate_limit(both)  # every quota group over → OVER_LIMIT
    assert r.overall_code == OVER_LIMIT


def test_stop_when_over_limit(store: Store) -> None:
    svc = make(store, Clock(1_700_000_000.0), stop_when_over=True)
    svc.should_rate_limit(request("web", descriptor(("shadow", "z"))))  # shadow: 1/min, now used
    both = request("web", descriptor(("client", "s")), descriptor(("plan", "basic")))
    svc.should_rate_limit(both)  # basic 1/min used, client 1 used
    for _ in range(3):
        r = svc.should_rate_limit(both)
        assert r.overall_code == OVER_LIMIT
    r = svc.should_rate_limit(request("web", descriptor(("client", "s"))))
    assert r.statuses[0].limit_remaining == 3  # the over-limit calls did not count against client


def test_sliding_window_has_no_double_burst(store: Store) -> None:
    clock = Clock(1_700_000_000.9)  # 900 ms into a second
    svc = make(store, clock)
    admitted = 0
    for _ in range(10):
        admitted += (svc.should_rate_limit(request("web", descriptor(("sliding", "s"))))).overall_code == OK
    clock.advance(0.2)  # 100 ms into the next second: 90% of the previous window still counts
    for _ in range(10):
        admitted += (svc.should_rate_limit(request("web", descriptor(("sliding", "s"))))).overall_code == OK
    assert admitted == 11  # fixed window would admit 20 here
    clock.advance(1.0)
    r = svc.should_rate_limit(request("web", descriptor(("sliding", "s"))))
    assert r.overall_code == OK


def test_gcra_spreads_admissions(store: Store) -> None:
    clock = Clock(1_700_000_000.0)
    svc = make(store, clock)
    codes = [
        (svc.should_rate_limit(request("web", descriptor(("gcra", "g"))))).overall_code for _ in range(11)
    ]
    assert codes == [OK] * 10 + [OVER_LIMIT]  # a full bucket is the burst
    clock.advance(0.1)  # one token per 100 ms
    codes = [
        (svc.should_rate_limit(request("web", descriptor(("gcra", "g"))))).overall_code for _ in range(2)
    ]
    assert codes == [OK, OVER_LIMIT]
    clock.advance(1.0)
    r = svc.should_rate_limit(request("web", descriptor(("gcra", "g"))))
    assert (r.overall_code, r.statuses[0].limit_remaining) == (OK, 9)
    assert r.statuses[0].duration_until_reset.seconds == 1  # 100 ms until the bucket is full again


def test_stats_keys_are_bounded() -> None:
    text = "domain: d\ndescriptors:\n  - key: ip\n    detailed_metric: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
    stats = StatsRegistry(max_keys=5)
    cfg = load_texts([("d.yaml", text)], stats=stats)
    from envoykit.ratelimit import Lookup

    lk = Lookup(cfg)
    for i in range(100):
        lk.get_limit("d", descriptor(("ip", f"10.0.0.{i}")))
    for i in range(100):
        lk.get_limit("d", descriptor(("ip", f"10.0.0.{i}"), limit=(5, Unit.SECOND)))
    assert len(stats.rules()) <= 6 and stats.dropped > 0
    assert stats.get("_overflow", "_overflow") is not None


def test_memory_store_sweeps_expired_counters() -> None:
    from envoykit.ratelimit.algorithms import Algorithm, Hit

    st = MemoryStore(max_keys=100)
    now = 1_700_000_000_000
    for i in range(50):
        st.apply([Hit(f"k{i}", 1, 10, 1000, Algorithm.FIXED_WINDOW)], now)
    assert len(st) == 50
    st.apply([Hit("other", 1, 10, 1000, Algorithm.FIXED_WINDOW)], now + 5000)
    assert len(st) == 1
    for i in range(300):
        st.apply([Hit(f"x{i}", 1, 10, 60_000, Algorithm.FIXED_WINDOW)], now + 6000)
    assert len(st) <= 101


def test_store_counts_exactly_under_concurrent_threads(store: Store) -> None:
    """8 threads x 50 hits on one counter: every hit sees a distinct count (no lost or shared update)."""
    from concurrent.futures import ThreadPoolExecutor

    from envoykit.ratelimit.algorithms import Algorithm, Hit

    now = 1_700_000_000_000
    hit = [Hit("ekrl:{t|k=v}|f3600", 1, 10**6, 3_600_000, Algorithm.FIXED_WINDOW)]
    with ThreadPoolExecutor(8) as pool:
        afters = list(pool.map(lambda _: store.apply(hit, now)[0].after, range(400)))
    assert sorted(afters) == list(range(1, 401))


def test_dead_redis_fails_fast() -> None:
    import time

    from envoykit.core import free_port
    from envoykit.ratelimit.algorithms import Algorithm, Hit
    from envoykit.ratelimit.stores import StoreError
    from envoykit.ratelimit.stores.redis import RedisStore

    st = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="ConnectionError"):
        st.apply([Hit("k", 1, 1, 1000, Algorithm.FIXED_WINDOW)], 1_700_000_000_000)
    assert time.monotonic() - t0 < 1.0
    assert not st.ping()
    st.close()


QUOTA = """
domain: q
descriptors:
  - key: backend_name
    value: small
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: backend_name
    value: big
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: group
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: client
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: plan
    rate_limit: {unit: minute, requests_per_unit: 1}
"""


def _svc(store: Store, **settings: object) -> RateLimitService:
    cfg = load_texts([("q.yaml", QUOTA)], stats=StatsRegistry())
    return RateLimitService(lambda: cfg, store, ServiceSettings(**settings), clock=Clock(1_700_000_000.0))  # type: ignore[arg-type]


def _admitted(svc: RateLimitService, req: object, n: int = 50) -> int:
    return sum(svc.should_rate_limit(req).overall_code == OK for _ in range(n))  # type: ignore[arg-type]


@pytest.mark.parametrize("stop", [False, True], ids=["counting", "stop_when_over"])
def test_quota_mode_limits_with_and_without_stop_when_over(store: Store, stop: bool) -> None:
    """small (3/min) and big (10/min) quota groups: a request passes while one group has room, and
    uses it; with stop_when_over the over group is not counted but big still fills up."""
    both = request("q", descriptor(("backend_name", "small")), descriptor(("backend_name", "big")))
    assert _admitted(_svc(store, stop_when_over=stop), both) == 10
    one = request("q", descriptor(("group", f"g{stop}")))  # GLOBAL_QUOTA_MODE, one 3/min group
    assert _admitted(_svc(store, stop_when_over=stop, quota_mode=True), one) == 3


def test_stop_when_over_reports_what_was_counted(store: Store) -> None:
    """A refused request counts nothing, so its descriptors within limit report their room as before."""
    svc = _svc(store, stop_when_over=True)
    assert svc.should_rate_limit(request("q", descriptor(("plan", "p")))).overall_code == OK
    both = request("q", descriptor(("client", "c")), descriptor(("plan", "p")))
    r = svc.should_rate_limit(both)
    assert r.overall_code == OVER_LIMIT
    assert [s.limit_remaining for s in r.statuses] == [10, 0]  # client not counted: 10, not 9
    r = svc.should_rate_limit(request("q", descriptor(("client", "c"))))
    assert r.statuses[0].limit_remaining == 9
    # admitted by quota mode: the over group is not counted, the group that passes is
    two = request("q", descriptor(("backend_name", "small")), descriptor(("backend_name", "big")))
    for _ in range(3):
        svc.should_rate_limit(two)
    r = svc.should_rate_limit(two)
    assert r.overall_code == OK and r.statuses[0].code == OVER_LIMIT
    assert [s.limit_remaining for s in r.statuses] == [0, 6]


@pytest.mark.parametrize("addend", [2**62, 2**63, 2**64 - 1])
@pytest.mark.parametrize("stop", [False, True], ids=["counting", "stop_when_over"])
def test_huge_hits_addend_is_over_limit(store: Store, addend: int, stop: bool) -> None:
    svc = _svc(store, stop_when_over=stop)
    key = f"h{addend}{stop}"
    r = svc.should_rate_limit(request("q", descriptor(("client", key), hits_addend=addend)))
    assert r.overall_code == OVER_LIMIT and r.statuses[0].limit_remaining == 0
    r = svc.should_rate_limit(request("q", descriptor(("client", key))))
    # counted (fixed window counts every hit): the window is used up; not counted: room for all 10
    assert (r.overall_code, r.statuses[0].limit_remaining) == ((OK, 9) if stop else (OVER_LIMIT, 0))
