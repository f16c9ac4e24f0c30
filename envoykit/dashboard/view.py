"""What the page shows, computed from two snapshots and the control plane's status (pure functions).

Rates are per second over the window between the oldest and the newest snapshot (a counter that went
down was reset: its new value counts whole, as Prometheus' ``rate`` does). Latency percentiles are
interpolated within the buckets of ``istio_request_duration_milliseconds`` the way PromQL's
``histogram_quantile`` does. Errors are 5xx answers (and code 0: no answer), as Kiali counts them.

The graph follows Kiali's versioned-app graph: gateways and workloads call *services*, a service
sends to its *workloads* (one per version, so the canary split is the service's out-edges). Edges
come from ``istio_requests_total``; per caller and callee the destination's report is preferred
(``reporter="destination"``), the source's report is used where no destination reported (a callee
without telemetry). Nodes also come from the control plane's topology, so an idle service is drawn.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from envoykit.dashboard.sources import Labels, Snapshot

UNKNOWN = "unknown"
_KINDS = {"gw": "gateway", "svc": "service", "wl": "workload", "ext": "external"}


def counter_deltas(new: Snapshot, old: Snapshot | None, name: str) -> dict[Labels, float]:
    """``new - old`` per series of counter ``name``; a series missing in ``old`` or reset counts whole.

    With no ``old`` every delta is 0 (nothing to compare yet).
    """
    cur = new.samples.get(name, {})
    if old is None:
        return dict.fromkeys(cur, 0.0)
    prev = old.samples.get(name, {})
    out = {}
    for labels, v in cur.items():
        p = prev.get(labels, 0.0)
        out[labels] = v - p if v >= p else v
    return out


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) from cumulative ``(le, count)`` buckets, as PromQL interpolates.

    Returns None when there are no observations. A rank in the ``+Inf`` bucket answers the highest
    finite bound.
    """
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return None
    rank = q * bs[-1][1]
    lower, below = 0.0, 0.0
    for le, count in bs:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass
class _Acc:
    """Requests on one edge in the window and since start."""

    window: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0
    total: float = 0.0
    mtls: set[str] | None = None
    buckets: dict[float, float] | None = None

    def add(self, code: str, n: float, total: float, security: str) -> None:
        self.window += n
        self.total += total
        if code.startswith("5") or code == "0":
            self.errors += n
        elif code.startswith("4"):
            self.client_errors += n
        if security and (n > 0 or total > 0):
            (self.mtls if self.mtls is not None else self._new_mtls()).add(security)

    def _new_mtls(self) -> set[str]:
        self.mtls = set()
        return self.mtls


def _mtls_state(values: set[str] | None) -> str:
    if not values:
        return ""
    if values == {"mutual_tls"}:
        return "mutual_tls"
    if "mutual_tls" in values:
        return "mixed"
    return "none"


class _Names:
    """Maps the names in metric labels to graph node ids, from the control plane's topology."""

    def __init__(self, topology: dict[str, Any]) -> None:
        self.gateways = {g["name"]: g for g in topology.get("gateways", [])}
        self.services = {s["name"]: s for s in topology.get("services", [])}
        self.workload_service = {
            w["name"]: s["name"] for s in topology.get("services", []) for w in s["workloads"]
        }

    def caller(self, workload: str) -> str:
        if workload in self.gateways:
            return f"gw:{workload}"
        if not workload or workload == UNKNOWN:
            return "ext:unknown"
        return f"wl:{workload}"

    def service_of(self, labels: dict[str, str]) -> str:
        """The destination service; an Envoy cluster name (``outbound|80|v1|backend.default``, what a
        source report carries when no peer answered) gives its host's first label."""
        name = labels.get("destination_service_name", "")
        if name.startswith(("outbound|", "inbound|")):
            host = name.split("|")[-1]
            name = host.split(".", 1)[0]
        if name and name != UNKNOWN:
            return name
        return self.workload_service.get(labels.get("destination_workload", ""), UNKNOWN)


def _edges(new: Snapshot, old: Snapshot | None, names: _Names, window_s: float) -> list[dict[str, Any]]:
    reqs = counter_deltas(new, old, "istio_requests_total")
    totals = new.samples.get("istio_requests_total", {})
    hist = counter_deltas(new, old, "istio_request_duration_milliseconds_bucket")
    # which (caller, callee workload) pairs the destination reported
    reported = {
        (d.get("source_workload", ""), d.get("destination_workload", ""))
        for d in (dict(k) for k in totals)
        if d.get("reporter") == "destination"
    }

    def chosen(d: dict[str, str]) -> bool:
        pair = (d.get("source_workload", ""), d.get("destination_workload", ""))
        return d.get("reporter") == "destination" or pair not in reported

    acc: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    for labels, n in reqs.items():
        d = dict(labels)
        if not chosen(d):
            continue
        svc = f"svc:{names.service_of(d)}"
        code = d.get("response_code", "")
        dst_wl = d.get("destination_workload", "")
        # without a peer (a local reply such as a 429) there was no connection to judge
        sec = d.get("connection_security_policy", "") if dst_wl and dst_wl != UNKNOWN else ""
        total = totals.get(labels, 0.0)
        acc[(names.caller(d.get("source_workload", "")), svc)].add(code, n, total, sec)
        if dst_wl and dst_wl != UNKNOWN:
            acc[(svc, f"wl:{dst_wl}")].add(code, n, total, sec)
    for labels, n in hist.items():
        d = dict(labels)
        if not chosen(d) or n <= 0:
            continue
        le = float(d.pop("le"))
        svc = f"svc:{names.service_of(d)}"
        keys = [(names.caller(d.get("source_workload", "")), svc)]
        if d.get("destination_workload", UNKNOWN) != UNKNOWN:
            keys.append((svc, f"wl:{d['destination_workload']}"))
        for key in keys:
            if key in acc:
                a = acc[key]
                a.buckets = a.buckets or {}
                a.buckets[le] = a.buckets.get(le, 0.0) + n
    out = []
    for (src, dst), a in sorted(acc.items()):
        buckets = list((a.buckets or {}).items())
        out.append(
            {
                "id": f"{src}->{dst}",
                "source": src,
                "target": dst,
                "rps": a.window / window_s if window_s > 0 else 0.0,
                "error_rate": a.errors / a.window if a.window else 0.0,
                "client_error_rate": a.client_errors / a.window if a.window else 0.0,
                "requests": a.total,
                "p50_ms": histogram_quantile(0.5, buckets),
                "p99_ms": histogram_quantile(0.99, buckets),
                "mtls": _mtls_state(a.mtls),
            }
        )
    return out


def _nodes(
    topology: dict[str, Any], edges: list[dict[str, Any]], status: dict[str, Any]
) -> list[dict[str, Any]]:
    connected = {s["node"] for s in status.get("streams", [])}
    node_ids = {n["name"]: n["id"] for n in topology.get("nodes", [])}
    nodes: dict[str, dict[str, Any]] = {}
    for g in topology.get("gateways", []):
        nid = node_ids.get(g["name"], "")
        nodes[f"gw:{g['name']}"] = {
            "kind": "gateway",
            "label": g["name"],
            "detail": g["kind"],
            "xds_node": nid,
            "connected": nid in connected,
        }
    for s in topology.get("services", []):
        nodes[f"svc:{s['name']}"] = {"kind": "service", "label": s["name"], "detail": f"mTLS {s['mtls']}"}
        for w in s["workloads"]:
            nid = node_ids.get(w["name"], "")
            nodes[f"wl:{w['name']}"] = {
                "kind": "workload",
                "label": w["name"],
                "detail": w["version"],
                "service": s["name"],
                "xds_node": nid,
                "connected": nid in connected,
            }
    for e in edges:  # callers and callees the topology does not know (outside the mesh)
        for end in (e["source"], e["target"]):
            if end not in nodes:
                prefix, _, name = end.partition(":")
                label = "outside the mesh" if end == "ext:unknown" else name
                nodes[end] = {
                    "kind": _KINDS[prefix],
                    "label": label,
                    "detail": "" if prefix == "ext" else "not in mesh.yaml",
                }
    # inbound rate of each node, for its badge
    inbound: dict[str, float] = defaultdict(float)
    for e in edges:
        inbound[e["target"]] += e["rps"]
    return [{"id": k, **v, "rps": inbound.get(k, 0.0)} for k, v in nodes.items()]


def _config_edges(topology: dict[str, Any], have: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Edges the configuration implies (gateway → routed service, service → its workloads), idle."""
    pairs: list[tuple[str, str]] = []
    for r in topology.get("routes", []):
        for gw in r["gateways"]:
            if gw == "mesh":
                continue
            pairs.extend((f"gw:{gw}", f"svc:{d['service']}") for d in r["destinations"])
    for s in topology.get("services", []):
        pairs.extend((f"svc:{s['name']}", f"wl:{w['name']}") for w in s["workloads"])
    out = []
    for src, dst in dict.fromkeys(pairs):
        if (src, dst) not in have:
            out.append({"id": f"{src}->{dst}", "source": src, "target": dst, "idle": True, "rps": 0.0})
    return out


def _canary(topology: dict[str, Any], edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Configured weights of each weighted route against the observed share of each version."""
    by_target = {e["target"]: e for e in edges if e["source"].startswith("svc:")}
    services = {s["name"]: s for s in topology.get("services", [])}
    out = []
    for r in topology.get("routes", []):
        dests = r["destinations"]
        if len(dests) < 2:
            continue
        rows = []
        for d in dests:
            svc = services.get(d["service"])
            wls = [w["name"] for w in svc["workloads"] if w["version"] == d["version"]] if svc else []
            es = [by_target[f"wl:{w}"] for w in wls if f"wl:{w}" in by_target]
            rows.append(
                {
                    "service": d["service"],
                    "version": d["version"] or d["subset"] or d["service"],
                    "weight": d["weight"],
                    "rps": sum(e["rps"] for e in es),
                    "requests": sum(e.get("requests", 0.0) for e in es),
                }
            )
        window = sum(x["rps"] for x in rows)
        total = sum(x["requests"] for x in rows)
        for x in rows:
            x["observed_pct"] = 100.0 * x["rps"] / window if window else None
            x["observed_total_pct"] = 100.0 * x["requests"] / total if total else None
        out.append({"virtual_service": r["virtual_service"], "route": r["route"], "versions": rows})
    return out


def _by(
    new: Snapshot, old: Snapshot | None, names: dict[str, str], keys: tuple[str, ...], window_s: float
) -> list[dict[str, Any]]:
    """Totals and rates of several counters grouped by ``keys`` (``names``: column → sample name)."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for col, sample in names.items():
        deltas = counter_deltas(new, old, sample)
        for labels, v in new.samples.get(sample, {}).items():
            d = dict(labels)
            key = tuple(d.get(k, "") for k in keys)
            row = rows.setdefault(key, {**dict(zip(keys, key, strict=True)), **{c: 0.0 for c in names}})
            row[col] += v
            row[f"{col}_rps"] = row.get(f"{col}_rps", 0.0) + (
                deltas.get(labels, 0.0) / window_s if window_s > 0 else 0.0
            )
    return [rows[k] for k in sorted(rows)]


#: the row of the authz native gate's decisions (Envoy's, without the server) in the authz table
NATIVE_GATE_ROW = "<Envoy native gate>"


def authz_rows(new: Snapshot, old: Snapshot | None, window_s: float) -> list[dict[str, Any]]:
    """Per rule: ``allow``, ``deny``, ``dry_run_deny`` totals and ``*_rps`` rates; with the native gate,
    a :data:`NATIVE_GATE_ROW` row of what Envoy decided alone (``envoykit_authz_native_decisions_total``,
    summed over the Envoys), so the table counts every decision."""
    rows: dict[str, dict[str, Any]] = {}
    for name in ("envoykit_authz_decisions_total", "envoykit_authz_native_decisions_total"):
        deltas = counter_deltas(new, old, name)
        for labels, v in new.samples.get(name, {}).items():
            d = dict(labels)
            rule = d.get("rule", "") if name == "envoykit_authz_decisions_total" else NATIVE_GATE_ROW
            row = rows.setdefault(rule, {"rule": rule})
            result = d.get("result", "")
            row[result] = row.get(result, 0.0) + v
            rate = deltas.get(labels, 0.0) / window_s if window_s > 0 else 0.0
            row[f"{result}_rps"] = row.get(f"{result}_rps", 0.0) + rate
    return [rows[k] for k in sorted(rows)]


def ratelimit_rows(new: Snapshot, old: Snapshot | None, window_s: float) -> list[dict[str, Any]]:
    """Per descriptor (``domain``, ``key``): hits, over-limit, near-limit, shadow totals and rates."""
    return _by(
        new,
        old,
        {
            "hits": "envoykit_ratelimit_hits_total",
            "over_limit": "envoykit_ratelimit_over_limit_total",
            "near_limit": "envoykit_ratelimit_near_limit_total",
            "shadow_mode": "envoykit_ratelimit_shadow_mode_total",
        },
        ("domain", "key"),
        window_s,
    )


def control_view(status: dict[str, Any] | None, error: str) -> dict[str, Any]:
    """Connected Envoys, last push, NACKs and the last refused change, from ``/status``."""
    if status is None:
        return {"reachable": False, "error": error}
    streams = status.get("streams", [])
    pushes = [s["last_push"] for s in streams if s.get("last_push")]
    return {
        "reachable": True,
        "error": "",
        "generation": status.get("generation"),
        "applied_at": status.get("applied_at"),
        "last_push": max(pushes) if pushes else None,
        "last_error": status.get("last_error"),
        "expected": len(status.get("nodes", [])),
        "connected": len({s["node"] for s in streams}),
        "streams": streams,
        "nacks": status.get("nacks", []),
        "missing": sorted(set(status.get("nodes", [])) - {s["node"] for s in streams}),
    }


def page_state(
    new: Snapshot, old: Snapshot | None, status: dict[str, Any] | None, status_error: str = ""
) -> dict[str, Any]:
    """Everything the page draws (see the module docstring); JSON-serialisable."""
    window_s = new.at - old.at if old is not None else 0.0
    topology = (status or {}).get("topology", {})
    names = _Names(topology)
    edges = _edges(new, old, names, window_s)
    have = {(e["source"], e["target"]) for e in edges}
    all_edges = edges + _config_edges(topology, have)
    health = [{"name": h.name, "kind": h.kind, "up": h.up, "error": h.error} for h in new.health]
    health.insert(
        0,
        {
            "name": "control-plane /status",
            "kind": "control-plane",
            "up": status is not None,
            "error": status_error,
        },
    )
    return {
        "at": new.at,
        "window_s": window_s,
        "errors": [e for e in (new.error, status_error) if e],
        "graph": {"nodes": _nodes(topology, all_edges, status or {}), "edges": all_edges},
        "canary": _canary(topology, edges),
        "authz": authz_rows(new, old, window_s),
        "ratelimit": ratelimit_rows(new, old, window_s),
        "control": control_view(status, status_error),
        "health": health,
    }
