"""Every decision in one decision log: Envoy writes the native gate's lines, the server the rest.

One real Envoy with the gate (the policy of tests/authz/test_gate.py) and its decision logger
(:func:`envoykit.core.gatelog.native_decision_log`) appending to the file the real authz server's
``--decision-log`` writes. Every request of the differential cases must appear in that file exactly
once, with ``decided_by`` saying who decided and the same result the client got.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from prometheus_client.parser import text_string_to_metric_families

from envoykit.authz import load_policy
from envoykit.authz.gate import compile_gate
from envoykit.authz.istio import Workload
from envoykit.core import free_port, validate_envoy_config
from envoykit.core.gatelog import native_decision_logs
from tests.authz.conftest import ext_authz_filter
from tests.authz.test_gate import CASES, HCM, NATIVE, _dicts, _policy_dir, _send
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener


def _gate_envoy(envoy: Any, pol_dir: Path, authz_port: int, log: Path, **sampling: float) -> tuple[Any, int]:
    gate = compile_gate(load_policy(pol_dir), [Workload()])
    port = free_port()
    enabled = MessageToDict(gate.ext_authz_enabled, preserving_proto_field_name=True)
    loggers = native_decision_logs(gate, str(log), node="gate-node", **sampling)
    hcm = {**HCM, "preserve_external_request_id": True, "access_log": _dicts(loggers)}
    listener = http_listener(
        port,
        [direct_response(200, "ok")],
        [*_dicts(gate.filters), ext_authz_filter(filter_enabled_metadata=enabled)],
        name="gate",
        hcm_extra=hcm,
    )
    cfg = bootstrap([listener], [cluster("authz", authz_port, http2=True)])
    cfg["node"] = {"id": "gate-node", "cluster": "test"}
    validate_envoy_config(cfg)
    return envoy(cfg), port


def _lines(log: Path, want: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The log's lines once there are ``want`` (Envoy flushes its file logs about every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def _send_all(port: int, rounds: int = 1) -> dict[str, tuple[tuple[str, str, dict[str, str], str], int]]:
    """Every case ``rounds`` times with its own x-request-id: id → (case, status)."""
    sent = {}
    for _ in range(rounds):
        for case in CASES:
            rid = str(uuid.uuid4())
            status, _body = _send(port, *case[:2], {**case[2], "x-request-id": rid})
            sent[rid] = (case, status)
    return sent


@pytest.mark.envoy
def test_every_decision_is_logged_once_with_who_decided(tmp_path: Path, envoy, authz_server) -> None:
    pol_dir = _policy_dir(tmp_path)
    srv = authz_server(pol_dir)
    log = srv.log_path.with_suffix(".decisions")  # the server's own --decision-log file
    proxy, port = _gate_envoy(envoy, pol_dir, srv.port, log)
    sent = _send_all(port)
    lines = _lines(log, len(sent))
    time.sleep(1.2)  # one more flush: nothing extra may arrive
    lines = _lines(log, len(sent))
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)
    assert sorted(by_id) == sorted(sent), "every request once, nothing else"
    assert all(len(v) == 1 for v in by_id.values()), [v for v in by_id.values() if len(v) > 1]
    for rid, ((method, path, headers, who), status) in sent.items():
        line = by_id[rid][0]
        assert line["decided_by"] == ("envoy" if who == NATIVE else "server"), (method, path, headers, line)
        assert line["method"] == method
        assert line["result"] == ("allow" if status == 200 else "deny"), (method, path, line)
        if line["decided_by"] == "envoy":
            assert line["status"] == (None if status == 200 else status)
            assert line["host"] == "svc" and line["node"] == "gate-node" and line["enforced"] is True
            assert line["principal"] is None and line["request_principal"] is None
    native = {(r[0][0], r[0][1], tuple(r[0][2].items())): by_id[rid][0] for rid, r in sent.items()}
    # the deciding policy, as Envoy reports it (the RBAC policy name: <policy>[<rule index>])
    assert native[("GET", "/public/a", ())]["rule"] == "public-read[0]"
    assert native[("PUT", "/orders", ())]["rule"] == "public-read[1]"
    debug = native[("GET", "/public/debug/vars", ())]
    assert (
        debug["rule"] == "no-debug[0]" and debug["reason"] == "rbac_access_denied_matched_policy[no-debug[0]]"
    )
    assert native[("GET", "/nothing", ())]["rule"] == "<no-allow-match>"
    assert native[("GET", "/public/x%3Bp", ())]["rule"] == "envoykit-ambiguous-path"
    assert native[("GET", "/public/a", ())]["path"] == "/public/a"
    assert native[("GET", "/admin/x", ())]["rule"] == "admin_needs_header"  # the server's line
    # Envoy's own counters agree: what it logged is what it decided
    stats = proxy.stats("http.gate.")
    envoy_lines = sum(1 for x in lines if x["decided_by"] == "envoy")
    native_denies = (
        stats["http.gate.rbac.envoykit_gate_deny_.denied"]
        + stats["http.gate.rbac.envoykit_gate_allow_.denied"]
    )
    assert envoy_lines == stats["http.gate.ext_authz.disabled"] + native_denies


@pytest.mark.envoy
def test_sampling_keeps_every_deny_and_a_share_of_allows(tmp_path: Path, envoy, authz_server) -> None:
    pol_dir = _policy_dir(tmp_path)
    srv = authz_server(pol_dir)
    none_log, half_log = tmp_path / "none.log", tmp_path / "half.log"
    _, none_port = _gate_envoy(envoy, pol_dir, srv.port, none_log, sample_allow=0.0)
    _, half_port = _gate_envoy(envoy, pol_dir, srv.port, half_log, sample_allow=0.5)
    rounds = 12
    sent_none, sent_half = _send_all(none_port, rounds), _send_all(half_port, rounds)

    def native(sent: dict[str, Any], allowed: bool) -> set[str]:
        return {rid for rid, (c, st) in sent.items() if c[3] == NATIVE and (st == 200) == allowed}

    time.sleep(1.5)
    got_none = {x["request_id"]: x for x in _lines(none_log, len(native(sent_none, False)))}
    assert set(got_none) == native(sent_none, False)  # every native deny, no allow
    got_half = {x["request_id"]: x for x in _lines(half_log, len(native(sent_half, False)))}
    denies, allows = native(sent_half, False), native(sent_half, True)
    assert denies <= set(got_half)
    logged_allows = set(got_half) - denies
    assert logged_allows <= allows
    # 12 rounds x 7 native allows = 84 draws at 0.5: outside 20..64 has odds below 1e-6
    assert 20 <= len(logged_allows) <= 64, len(logged_allows)
    gate = compile_gate(load_policy(pol_dir), [Workload()])
    assert native_decision_logs(gate, "x", 0.0, 0.0) == []
    assert len(native_decision_logs(gate, "x", 1.0, 0.0)) == 1  # the allows' logger alone
    with pytest.raises(ValueError, match="sample_allow must be between 0 and 1"):
        native_decision_logs(gate, "x", 1.5)


@pytest.mark.envoy
def test_deny_sampling_does_not_turn_denies_into_allows(tmp_path: Path, envoy, authz_server) -> None:
    pol_dir = _policy_dir(tmp_path)
    srv = authz_server(pol_dir)
    log = tmp_path / "d.log"
    _, port = _gate_envoy(envoy, pol_dir, srv.port, log, sample_allow=1.0, sample_deny=0.0)
    sent = _send_all(port)
    time.sleep(1.5)
    allows = {rid for rid, (c, st) in sent.items() if c[3] == NATIVE and st == 200}
    got = _lines(log, len(allows))
    assert {x["request_id"] for x in got} == allows and all(x["result"] == "allow" for x in got)


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name
    ]


@pytest.mark.envoy
def test_native_decisions_are_counted_beside_the_servers(
    tmp_path: Path, envoy, authz_server, server_process
) -> None:
    """The telemetry server reads the gate's counts from Envoy's admin: native allows and denies in
    ``envoykit_authz_native_decisions_total``, the rest in the authz server's own metric."""
    pol_dir = _policy_dir(tmp_path)
    srv = authz_server(pol_dir)
    proxy, port = _gate_envoy(envoy, pol_dir, srv.port, tmp_path / "d.log")
    rounds = 2
    sent = _send_all(port, rounds)
    tel = server_process("telemetry", "--log-level", "warning", "--envoy-admin", proxy.admin_url)
    text = tel.metrics()
    native = {lbl["result"]: v for lbl, v in _samples(text, "envoykit_authz_native_decisions_total")}
    assert {lbl["node"] for lbl, _ in _samples(text, "envoykit_authz_native_decisions_total")} == {
        "gate-node"
    }
    assert native == {
        "allow": sum(1 for c, st in sent.values() if c[3] == NATIVE and st == 200),
        "deny": sum(1 for c, st in sent.values() if c[3] == NATIVE and st != 200),
    }
    decided = _samples(srv.metrics(), "envoykit_authz_decisions_total")
    server = sum(v for lbl, v in decided if lbl["result"] in ("allow", "deny"))  # not dry_run_deny
    assert server == sum(1 for c, _ in sent.values() if c[3] != NATIVE)
    assert native["allow"] + native["deny"] + server == len(CASES) * rounds  # every decision, once
