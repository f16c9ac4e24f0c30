"""The native gate's counts across an Envoy restart: what it had counted is kept, never counted twice
(the same rule as the stats transport's series; the counting itself is tested through a real Envoy in
tests/authz/test_gate_decision_log.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from envoykit.telemetry.envoystats import EnvoyStatsReader
from envoykit.telemetry.labels import LabelGuard

STATS = """# TYPE envoy_http_ext_authz_disabled counter
envoy_http_ext_authz_disabled{envoy_http_conn_manager_prefix="inbound"} ALLOW
envoy_http_ext_authz_disabled{envoy_http_conn_manager_prefix="ungated"} 100
# TYPE envoy_http_rbac_denied counter
envoy_http_rbac_denied{envoy_rbac_http_prefix="envoykit_gate_deny_",envoy_http_conn_manager_prefix="inbound"} DENY
envoy_http_rbac_denied{envoy_rbac_http_prefix="envoykit_gate_allow_",envoy_http_conn_manager_prefix="inbound"} 1
envoy_http_rbac_denied{envoy_rbac_http_prefix="mine_",envoy_http_conn_manager_prefix="inbound"} 50
"""


def _native(reader: EnvoyStatsReader) -> dict[tuple[str, str], float]:
    fams = [m for m in reader.gap_metrics() if m.name == "envoykit_authz_native_decisions"]
    return {(s.labels["node"], s.labels["result"]): s.value for s in fams[0].samples}


def test_counts_survive_an_envoy_restart() -> None:
    reader = EnvoyStatsReader(["http://a"], LabelGuard(10))
    env = reader._envoys["http://a"]
    info = {"node": {"id": "n1"}, "uptime_current_epoch": "100s"}

    def read(allow: int, deny: int, uptime: str) -> None:
        text = STATS.replace("ALLOW", str(allow)).replace("DENY", str(deny))
        reader._update(env, ({**info, "uptime_current_epoch": uptime}, text))
        assert list(text_string_to_metric_families(text))  # well-formed

    read(10, 4, "100s")
    # ext_authz.disabled counts only where the gate runs; other RBAC filters' denies are not the gate's
    assert _native(reader) == {("n1", "allow"): 10, ("n1", "deny"): 5}
    read(3, 0, "2s")  # restarted: new totals add to what it had counted
    assert _native(reader) == {("n1", "allow"): 13, ("n1", "deny"): 6}
    reader._update(env, None)  # the admin does not answer: the last totals stand
    assert _native(reader) == {("n1", "allow"): 13, ("n1", "deny"): 6}
