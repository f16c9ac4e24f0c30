"""`envoykit envoy inject --authz ... --gate FILE|URL`: the native gate, from the document the authz
server publishes, in a hand-written config, run through a real Envoy and a real authz server; its
refusals and off switch."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.authz.gate import GATE_FILTERS
from envoykit.core.net import free_port
from tests.control.apps import Echo
from tests.control.test_authz_gate import _policy, _publish
from tests.control.test_inject import run, write
from tests.serverproc import ServerProcess

NORMALISE = (
    "                stat_prefix: main\n"
    "                normalize_path: true\n"
    "                merge_slashes: true\n"
    "                path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD\n"
)
UNCHECKED = (
    "                        - match: {prefix: /public}\n"
    "                          route: {cluster: app}\n"
    "                          typed_per_filter_config:\n"
    "                            envoy.filters.http.ext_authz:\n"
    '                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n'
    "                              disabled: true\n"
)


def _user_config(tmp_path: Path, port: int, app: int) -> Path:
    p = write(tmp_path, port, app)
    text = p.read_text().replace("                stat_prefix: main\n", NORMALISE)
    p.write_text(
        text.replace("                      routes:\n", "                      routes:\n" + UNCHECKED)
    )
    return p


def _filters(out: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(out.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return list(hcm["http_filters"])


@pytest.mark.server
def test_inject_gate_through_envoy(tmp_path: Path, envoy: Any) -> None:
    _policy(tmp_path)
    # started once the config naming its port is written
    decisions = tmp_path / "decisions.log"  # the server's and Envoy's lines in one file
    args = ["--policy-dir", str(tmp_path / "policy"), "--decision-log", str(decisions)]
    srv = ServerProcess("authz", args, tmp_path, health=True)
    port = free_port()
    with Echo("app") as app:
        cfg = _user_config(tmp_path, port, app.port)
        out = tmp_path / "out.yaml"
        srv.start()
        try:  # the gate document as the running server serves it on its metrics port
            gate_url = f"http://127.0.0.1:{srv.metrics_port}/gate"
            r = run(
                cfg, "-o", out, "--authz", f"127.0.0.1:{srv.port}", "--gate", gate_url,
                "--gate-decision-log", decisions,
            )  # fmt: skip
            assert r.exit_code == 0, r.output
            assert "ext_authz is called only for requests matching orders_need_a_customer" in r.output
            names = [f["name"] for f in _filters(out)]
            assert names[-4:] == [*GATE_FILTERS, "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
            proxy = envoy(yaml.safe_load(out.read_text()), name="injected")
            url = f"http://127.0.0.1:{port}"

            def called() -> int:
                s = proxy.stats("http.main.ext_authz.")
                return s.get("http.main.ext_authz.ok", 0) + s.get("http.main.ext_authz.denied", 0)

            assert httpx.get(f"{url}/hello", trust_env=False).status_code == 200
            assert httpx.get(f"{url}/blocked", trust_env=False).status_code == 403
            assert called() == 0
            assert httpx.get(f"{url}/orders/1", trust_env=False).status_code == 403
            assert (
                httpx.get(f"{url}/orders/1", headers={"x-customer": "c"}, trust_env=False).status_code == 200
            )
            assert called() == 2
            # ext_authz is off on /public: so is the gate (the policy would deny /public-x)
            assert httpx.get(f"{url}/public-x", trust_env=False).status_code == 200
            # one line per decision, saying who decided; the unchecked route has none
            want = [("envoy", "/hello", "allow"), ("envoy", "/blocked", "deny")]
            want += [("server", "/orders/1", "deny"), ("server", "/orders/1", "allow")]
            deadline = time.monotonic() + 10
            while len(decisions.read_text().splitlines()) < len(want) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.2)  # one more flush of Envoy's file logs: nothing else arrives
            lines = [json.loads(x) for x in decisions.read_text().splitlines()]
            got = sorted((x["decided_by"], x["path"], x["result"]) for x in lines)
            assert got == sorted(want), lines
            srv.stop()
            assert (
                httpx.get(f"{url}/orders/1", headers={"x-customer": "c"}, trust_env=False).status_code == 403
            )
            assert httpx.get(f"{url}/hello", trust_env=False).status_code == 200
        finally:
            srv.stop()


@pytest.mark.envoy
def test_inject_gate_refusals_and_off_switch(tmp_path: Path) -> None:
    _policy(tmp_path)
    _publish(tmp_path)
    gate = tmp_path / "gate.json"
    plain = write(tmp_path, name="plain.yaml")  # no path normalisation: the gate would see another path
    r = run(plain, "--authz", "127.0.0.1:9191", "--gate", gate, "--no-validate")
    assert r.exit_code == 1 and "the native gate needs the path the authz server matches" in r.output
    r = run(plain, "--authz", "127.0.0.1:9191", "--gate", gate, "--no-gate", "--no-validate")
    assert r.exit_code == 0, r.output
    assert not set(GATE_FILTERS) & {f["name"] for f in _filters(tmp_path / "plain.envoykit.yaml")}
    # renewing: --replace puts one gate back, not a second one
    cfg = _user_config(tmp_path, 10000, 8000)
    once, twice = tmp_path / "once.yaml", tmp_path / "twice.yaml"
    log = ("--gate-decision-log", tmp_path / "d.log")
    assert run(cfg, "-o", once, "--authz", "127.0.0.1:9191", "--gate", gate, *log).exit_code == 0
    r = run(once, "-o", twice, "--authz", "127.0.0.1:9191", "--gate", gate, "--replace", *log)
    assert r.exit_code == 0, r.output
    names = [f["name"] for f in _filters(twice)]
    assert names == [*GATE_FILTERS, "envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    hcm = yaml.safe_load(twice.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]
    logs = hcm["filters"][0]["typed_config"]["access_log"]
    assert [x["typed_config"]["log_format"]["json_format"]["decided_by"] for x in logs] == ["envoy"] * 3
    r = run(cfg, "--authz", "127.0.0.1:9191", *log, "--no-validate")
    assert r.exit_code == 1 and "--gate-decision-log logs the native gate's decisions" in r.output
    (tmp_path / "policy" / "all.py").write_text(
        "from envoykit.authz import deny_rule\n@deny_rule()\ndef x(req): ...\n"
    )
    _publish(tmp_path)
    r = run(cfg, "--authz", "127.0.0.1:9191", "--gate", gate, "--no-validate")
    assert r.exit_code == 0 and "native gate off, every request goes to ext_authz" in r.output
    r = run(cfg, "--ratelimit", "127.0.0.1:1", "--descriptor", "remote_address", "--gate", gate)
    assert r.exit_code == 1 and "--gate is for the native gate in front of --authz" in r.output
    gate.write_text("[1]")  # not a gate document: refused, naming the file
    r = run(cfg, "--authz", "127.0.0.1:9191", "--gate", gate, "--no-validate")
    assert r.exit_code == 1 and f"{gate}: not an envoykit gate document" in r.output
