"""Tables of ``envoykit demo``: one row per scenario, and the telemetry per service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from envoykit.mesh.demo import Check

WHAT = {
    "mesh_path": "ingress -> frontend -> backend over mTLS",
    "outside_refused": "backend called from outside the mesh",
    "wrong_identity": "backend called by another identity",
    "jwt": "JWT required for /admin (authz)",
    "rate_limit": "rate limit per client at the ingress",
    "canary": "canary split of backend",
    "wasm": "header added by the Wasm filter",
    "egress_refused": "egress to a host not allowed",
    "telemetry": "telemetry (istio_requests_total)",
    "decisions": "what authz and ratelimit decided",
}


def checks_table(checks: Sequence[Check]) -> Table:
    """One row per scenario: what it shows, passed or not, and what happened."""
    table = Table(title="envoykit demo", title_justify="left")
    table.add_column("scenario")
    table.add_column("result")
    table.add_column("what happened", overflow="fold")
    for c in checks:
        table.add_row(WHAT.get(c.name, c.name), "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.summary)
    return table


def telemetry_table(per_service: Mapping[str, Mapping[str, Any]]) -> Table:
    """Requests, response codes and latency percentiles (ms) per destination service."""
    table = Table(title="telemetry, per destination service", title_justify="left")
    for col in ("service", "requests", "codes", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col, justify="left" if col in ("service", "codes") else "right")
    for svc, e in per_service.items():
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(e.get("codes", {}).items()))
        table.add_row(
            svc,
            str(e.get("requests", 0)),
            codes,
            *(_ms(e.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms")),
        )
    return table


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def decisions_table(figures: Mapping[str, Any]) -> Table:
    """Authz decisions per rule and rate-limit hits per rule, from the servers' metrics."""
    table = Table(title="decisions, from the servers' /metrics", title_justify="left")
    table.add_column("server")
    table.add_column("rule")
    table.add_column("count", justify="right")
    for what, n in figures.get("authz", {}).items():
        table.add_row("authz", what, str(n))
    for key, v in figures.get("ratelimit", {}).items():
        table.add_row("ratelimit", f"{key}: hits / over limit", f"{v['hits']} / {v['over_limit']}")
    return table
