"""The authz native gate's decisions, counted from Envoy's own stats (read with the stats transport's
admin scrape, :mod:`envoykit.telemetry.envoystats`).

With the gate, Envoy's RBAC decides most requests and the authz server never sees them, so its
``envoykit_authz_decisions_total`` covers only the rest. Per Envoy, a connection manager ``<hcm>``
that runs the gate (it has stats under ``http.<hcm>.rbac.envoykit_gate_``) counts

* native **denies** in ``http.<hcm>.rbac.envoykit_gate_deny_.denied`` and
  ``http.<hcm>.rbac.envoykit_gate_allow_.denied`` (the two gate filters' ``rules_stat_prefix``), and
* native **allows** in ``http.<hcm>.ext_authz.disabled``: requests that passed both gate filters and
  for which ext_authz's ``filter_enabled_metadata`` said "skip" (routes where ext_authz is disabled
  per route are not counted there: they were not decided at all).

These become ``envoykit_authz_native_decisions_total{node, result}`` (``result``: ``allow``,
``deny``); the server's own decisions stay in ``envoykit_authz_decisions_total``, so the two together
count every decision. In Prometheus form Envoy tags the connection manager as
``envoy_http_conn_manager_prefix`` and the RBAC prefix as ``envoy_rbac_http_prefix``.
Sources: Envoy docs, HTTP RBAC filter (statistics, ``rules_stat_prefix``), ext_authz filter
(statistics: ``disabled``).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from envoykit.core.authzgate import GATE_PREFIX

#: ``/stats`` filter (regex) for the stats read here.
STATS_FILTER = rf"http\.[^.]+\.ext_authz\.disabled$|http\.[^.]+\.rbac\.{GATE_PREFIX}"
#: The metric's name (a counter: ``_total`` is added on export).
NAME = "envoykit_authz_native_decisions"
HELP = (
    "Requests the authz native gate decided in Envoy, without the authz server, by result (from Envoy's "
    "RBAC and ext_authz stats); the server's own are envoykit_authz_decisions_total."
)

_HCM = "envoy_http_conn_manager_prefix"
_RBAC = "envoy_rbac_http_prefix"
_DENYING = (GATE_PREFIX + "deny_", GATE_PREFIX + "allow_")


def native_decisions(families: Iterable[Metric]) -> dict[str, float]:
    """``{"allow": n, "deny": m}`` from one Envoy's ``/stats/prometheus`` families (parsed)."""
    gated: set[str] = set()
    disabled: dict[str, float] = {}
    deny = 0.0
    for fam in families:
        if fam.name == "envoy_http_ext_authz_disabled":
            for s in fam.samples:
                disabled[s.labels.get(_HCM, "")] = disabled.get(s.labels.get(_HCM, ""), 0.0) + s.value
        elif fam.name.startswith("envoy_http_rbac_"):
            for s in fam.samples:
                prefix = s.labels.get(_RBAC, "")
                if not prefix.startswith(GATE_PREFIX):
                    continue
                gated.add(s.labels.get(_HCM, ""))
                if fam.name == "envoy_http_rbac_denied" and prefix in _DENYING:
                    deny += s.value
    # ext_authz.disabled counts only where a gate runs (a user's own filter_enabled could skip it too)
    allow = sum(v for hcm, v in disabled.items() if hcm in gated)
    return {"allow": allow, "deny": deny}
