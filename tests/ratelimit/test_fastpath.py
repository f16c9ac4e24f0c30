"""The memory store's lean path (:mod:`envoykit.ratelimit.fastpath`) against the full path: same
response bytes, same counters, same rule stats, call after call (differential, controllable clock)."""

from __future__ import annotations

import itertools

import pytest
from envoy.service.ratelimit.v3 import rls_pb2

from envoykit.core.unary import GrpcStatusError, StatusCode
from envoykit.ratelimit import MemoryStore, RateLimitService, ServiceSettings, load_texts
from envoykit.ratelimit.config import RateLimitConfig
from envoykit.ratelimit.fastpath import _FULL_PATH, MAX_PLANS, FastPath
from envoykit.ratelimit.metrics import StatsRegistry
from tests.ratelimit.helpers import OVER_LIMIT, Clock, descriptor, request
from tests.ratelimit.test_service import CONFIG

EXTRA = """
domain: api
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 3}
    descriptors:
      - key: path
        value_to_metric: true
        rate_limit: {unit: minute, requests_per_unit: 4}
  - key: detailed
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: big
    rate_limit: {unit: day, requests_per_unit: 300}
"""

REQUESTS = [
    request("web", descriptor(("client", "c1"))),
    request("web", descriptor(("client", "c2")), descriptor(("ten", "x"))),
    request("web", descriptor(("nothing", "here")), descriptor(("client", "c1"))),
    request("web", descriptor(("shadow", "s"))),
    request("web", descriptor(("wild", "abc"))),
    request("web", descriptor(("shared", "a1")), descriptor(("shared", "a2"))),
    request("web", descriptor(("client", "c3"), hits_addend=0)),
    request("web", descriptor(("client", "c4")), hits_addend=3),
    request("web", descriptor(("client", "c1")), descriptor(("client", "c1"))),  # one counter twice
    request("web", descriptor(("vip", "v"))),  # unlimited: full path
    request("web", descriptor(("sliding", "x"))),  # sliding window: full path
    request("web", descriptor(("plan", "basic")), descriptor(("plan", "gold"))),  # replaces
    request("web", descriptor(("backend_name", "b1"))),  # quota mode
    request("web", descriptor(("client", "c5"), limit=(2, 2))),  # Envoy's limit override
    request("nodomain", descriptor(("client", "c1"))),
    request("api", descriptor(("user", "u"), ("path", "/a"))),
    request("api", descriptor(("user", "u"), ("path", "/b")), descriptor(("user", "u"))),
    request("api", descriptor(("detailed", "d1"))),
    request("api", descriptor(("big", "b")), hits_addend=290),
]


def _config() -> RateLimitConfig:
    return load_texts([("web.yaml", CONFIG), ("api.yaml", EXTRA)], stats=StatsRegistry())


def _stats(cfg: RateLimitConfig) -> dict[tuple[str, str], tuple[int, ...]]:
    return {
        (r.domain, r.key): (r.total_hits, r.over_limit, r.near_limit, r.within_limit, r.shadow_mode)
        for r in cfg.stats.rules()
    }


@pytest.mark.parametrize(
    "settings",
    [ServiceSettings(), ServiceSettings(near_limit_ratio=0.5), ServiceSettings(shadow_mode=True)],
    ids=["default", "near-0.5", "global-shadow"],
)
def test_same_bytes_counters_and_stats_as_the_full_path(settings: ServiceSettings) -> None:
    clock = Clock(1_699_999_980.0 + 55.5)  # near a minute's end: windows roll over during the run
    full_cfg, fast_cfg = _config(), _config()
    full_store, fast_store = MemoryStore(), MemoryStore()
    full = RateLimitService(lambda: full_cfg, full_store, settings, clock=clock)
    fast = RateLimitService(lambda: fast_cfg, fast_store, settings, clock=clock).fast_path(fast_store)
    over = 0
    for step, req in zip(range(400), itertools.cycle(REQUESTS), strict=False):
        raw = req.SerializeToString()
        want = full.answer(req)
        got = fast(raw)
        got_bytes = got if isinstance(got, bytes) else got.SerializeToString()
        assert rls_pb2.RateLimitResponse.FromString(got_bytes) == want, (step, req)
        assert got_bytes == want.SerializeToString(), (step, req)
        over += any(st.code == OVER_LIMIT for st in want.statuses)
        clock.advance(0.037)
    assert over > 20  # the run reached the limits, not only the happy path
    assert dict(fast_store._data) == dict(full_store._data)
    assert _stats(fast_cfg) == _stats(full_cfg)
    plans = fast._plans
    if settings.shadow_mode:
        assert all(p is _FULL_PATH for p in plans.values())
    else:
        assert sum(p is not _FULL_PATH for p in plans.values()) == 13  # the plain requests
        assert sum(p is _FULL_PATH for p in plans.values()) == 6


def test_reload_drops_plans_and_counts_under_the_new_rule() -> None:
    clock = Clock()
    cfgs = [load_texts([("web.yaml", CONFIG)], stats=StatsRegistry())]
    store = MemoryStore()
    fast = RateLimitService(lambda: cfgs[-1], store, clock=clock).fast_path(store)
    raw = request("web", descriptor(("client", "c1"))).SerializeToString()
    for _ in range(3):
        fast(raw)
    cfgs.append(load_texts([("web.yaml", CONFIG.replace("requests_per_unit: 5", "requests_per_unit: 2"))]))
    got = fast(raw)
    resp = got if isinstance(got, rls_pb2.RateLimitResponse) else rls_pb2.RateLimitResponse.FromString(got)
    assert resp.overall_code == OVER_LIMIT  # 4 hits against the new limit of 2 (counters kept)
    assert resp.statuses[0].current_limit.requests_per_unit == 2


def test_plans_are_bounded() -> None:
    cfg = _config()
    store = MemoryStore()
    fast = RateLimitService(lambda: cfg, store, clock=Clock()).fast_path(store)
    assert isinstance(fast, FastPath)
    for i in range(MAX_PLANS + 5):
        fast(request("web", descriptor(("client", f"c{i}"))).SerializeToString())
    assert len(fast._plans) <= MAX_PLANS


def test_a_request_that_does_not_parse_is_refused() -> None:
    cfg = _config()
    store = MemoryStore()
    fast = RateLimitService(lambda: cfg, store, clock=Clock()).fast_path(store)
    with pytest.raises(GrpcStatusError) as info:
        fast(b"\x0a\xff")  # a length past the end
    assert info.value.code == StatusCode.INTERNAL
    assert not fast._plans and not store._data
