"""The dashboard's arithmetic on hand-made snapshots: quantiles, counter resets, which reporter counts,
the canary share, and the parsing of a real exposition (prometheus_client's own output)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from envoykit.dashboard.sources import Snapshot, parse_exposition
from envoykit.dashboard.view import NATIVE_GATE_ROW, counter_deltas, histogram_quantile, page_state

TOPOLOGY: dict[str, Any] = {
    "nodes": [
        {"id": "ingress~ingress", "kind": "ingress", "name": "ingress"},
        {"id": "sidecar~backend-v1", "kind": "sidecar", "name": "backend-v1"},
        {"id": "sidecar~backend-v2", "kind": "sidecar", "name": "backend-v2"},
    ],
    "services": [
        {
            "name": "backend",
            "mtls": "STRICT",
            "workloads": [{"name": "backend-v1", "version": "v1"}, {"name": "backend-v2", "version": "v2"}],
        }
    ],
    "gateways": [{"name": "ingress", "kind": "ingress", "mtls": "DISABLE"}],
    "routes": [
        {
            "virtual_service": "backend",
            "route": "canary",
            "gateways": ["mesh"],
            "destinations": [
                {"service": "backend", "subset": "v1", "version": "v1", "weight": 75},
                {"service": "backend", "subset": "v2", "version": "v2", "weight": 25},
            ],
        },
        {
            "virtual_service": "ingress",
            "route": "0",
            "gateways": ["ingress"],
            "destinations": [{"service": "backend", "subset": None, "version": None, "weight": None}],
        },
    ],
}
STATUS = {
    "nodes": ["ingress~ingress", "sidecar~backend-v1"],
    "streams": [],
    "nacks": [],
    "topology": TOPOLOGY,
}


def req(
    reporter: str, dst: str, code: str = "200", src: str = "ingress", sec: str = "mutual_tls"
) -> dict[str, str]:
    return {
        "reporter": reporter,
        "source_workload": src,
        "destination_workload": dst,
        "destination_service_name": "backend",
        "response_code": code,
        "connection_security_policy": sec,
    }


def snap(at: float, series: list[tuple[dict[str, str], float]]) -> Snapshot:
    s = Snapshot(at)
    for labels, v in series:
        s.add("istio_requests_total", labels, v)
    return s


def test_histogram_quantile_interpolates_like_promql() -> None:
    buckets = [(1.0, 10.0), (5.0, 50.0), (10.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(5.0)  # rank 50: the top of (1, 5]
    assert histogram_quantile(0.1, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.3, buckets) == pytest.approx(1 + 4 * (30 - 10) / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(5 + 5 * (99 - 50) / 50)
    # a rank in +Inf answers the highest finite bound; no observations: None
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0
    assert histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None


def test_counter_deltas_count_a_reset_whole_and_a_new_series_from_zero() -> None:
    a, b, c = (("k", "a"),), (("k", "b"),), (("k", "c"),)
    old = Snapshot(0.0, {"x": {a: 10.0, b: 50.0}})
    new = Snapshot(5.0, {"x": {a: 15.0, b: 3.0, c: 7.0}})
    assert counter_deltas(new, old, "x") == {a: 5.0, b: 3.0, c: 7.0}
    assert counter_deltas(new, None, "x") == {a: 0.0, b: 0.0, c: 0.0}


def test_destination_reports_win_and_the_canary_share_is_observed() -> None:
    old = snap(0.0, [(req("destination", "backend-v1"), 0), (req("destination", "backend-v2"), 0)])
    new = snap(
        10.0,
        [
            (req("destination", "backend-v1"), 30),
            (req("destination", "backend-v1", "503"), 10),
            (req("destination", "backend-v2"), 10),
            # the same calls seen by the caller: ignored, the destination reported them
            (req("source", "backend-v1"), 40),
            (req("source", "backend-v2"), 10),
        ],
    )
    state = page_state(new, old, STATUS)
    edges = {e["id"]: e for e in state["graph"]["edges"]}
    into = edges["gw:ingress->svc:backend"]
    assert into["rps"] == pytest.approx(5.0)  # 50 requests in 10 s
    assert into["error_rate"] == pytest.approx(0.2)
    assert into["mtls"] == "mutual_tls"
    assert edges["svc:backend->wl:backend-v1"]["rps"] == pytest.approx(4.0)
    assert edges["svc:backend->wl:backend-v2"]["rps"] == pytest.approx(1.0)
    (canary,) = state["canary"]
    shares = {v["version"]: (v["weight"], v["observed_pct"]) for v in canary["versions"]}
    assert shares == {"v1": (75, pytest.approx(80.0)), "v2": (25, pytest.approx(20.0))}
    nodes = {n["id"]: n for n in state["graph"]["nodes"]}
    assert nodes["wl:backend-v1"]["connected"] is False  # no stream open in STATUS
    assert state["control"]["missing"] == ["ingress~ingress", "sidecar~backend-v1"]


def test_a_source_report_without_a_peer_names_the_service_from_the_cluster() -> None:
    labels = {
        "reporter": "source",
        "source_workload": "ingress",
        "destination_workload": "unknown",
        "destination_service_name": "outbound|80||backend.default",
        "response_code": "429",
        "connection_security_policy": "none",
    }
    state = page_state(snap(4.0, [(labels, 8)]), snap(0.0, [(labels, 0)]), STATUS)
    edge = next(e for e in state["graph"]["edges"] if e["id"] == "gw:ingress->svc:backend")
    assert edge["rps"] == pytest.approx(2.0) and edge["client_error_rate"] == 1.0
    assert edge["mtls"] == ""  # a local reply had no connection to judge
    assert not edge.get("idle")


def test_unknown_callers_are_drawn_outside_the_mesh_and_idle_config_edges_stay() -> None:
    state = page_state(snap(1.0, [(req("destination", "backend-v1", src="unknown"), 1)]), None, STATUS)
    ids = {n["id"]: n["kind"] for n in state["graph"]["nodes"]}
    assert ids["ext:unknown"] == "external"
    idle = {e["id"] for e in state["graph"]["edges"] if e.get("idle")}
    assert "svc:backend->wl:backend-v2" in idle and "gw:ingress->svc:backend" in idle


def test_exposition_parsing_and_decision_tables() -> None:
    reg = CollectorRegistry()
    decisions = Counter("envoykit_authz_decisions", "d", ["result", "rule"], registry=reg)
    decisions.labels("deny", "admin_needs_token").inc(3)
    decisions.labels("dry_run_deny", "new_rule").inc(2)
    decisions.labels("allow", "everyone").inc(7)
    native = Counter("envoykit_authz_native_decisions", "n", ["node", "result"], registry=reg)
    native.labels("sidecar~a", "allow").inc(40)
    native.labels("ingress~ingress", "allow").inc(2)
    native.labels("ingress~ingress", "deny").inc(5)
    hist = Histogram("istio_request_duration_milliseconds", "h", ["reporter"], buckets=(1, 10), registry=reg)
    hist.labels("destination").observe(4)
    s = Snapshot(1.0)
    parse_exposition(generate_latest(reg).decode(), s)
    assert (
        s.samples["envoykit_authz_decisions_total"][(("result", "deny"), ("rule", "admin_needs_token"))] == 3
    )
    assert (("le", "10.0"), ("reporter", "destination")) in s.samples[
        "istio_request_duration_milliseconds_bucket"
    ]
    rows = {r["rule"]: r for r in page_state(s, None, None)["authz"]}
    assert rows["admin_needs_token"]["deny"] == 3 and rows["new_rule"]["dry_run_deny"] == 2
    assert rows["everyone"]["allow"] == 7
    # what Envoy's native gate decided alone, over every Envoy, beside the server's rules
    assert rows[NATIVE_GATE_ROW]["allow"] == 42 and rows[NATIVE_GATE_ROW]["deny"] == 5
    with pytest.raises(ValueError):
        parse_exposition("this is { not prometheus", Snapshot(0.0))
