"""`envoykit envoy inject` on a hand-written config: round trip, DNS clusters, refusals, --replace,
workload identity; results checked by `envoy --mode validate` and run through a real Envoy."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.control.translate.inject_file import guess_indent
from envoykit.core.net import free_port
from tests.control.apps import Echo
from tests.control.doubles import GrpcDouble
from tests.extproc.proc import start_extproc
from tests.serverproc import ServerProcess, StartServer

# A user's file: comments, an unusual key order, quoted keys, sequences indented under their key.
USER = """\
# my edge proxy; do not lose this comment
static_resources:
  # the one listener
  listeners:
    - name: main
      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: main
                http_filters:   # router last
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{prefix: /}}
                          route: {{cluster: app}}  # the app
  clusters:
    - name: app
      connect_timeout: 1s
      type: STATIC
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"""


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(main, ["envoy", "inject", *map(str, args)], catch_exceptions=False)


def write(tmp_path: Path, port: int = 10000, app: int = 8000, name: str = "in.yaml") -> Path:
    p = tmp_path / name
    p.write_text(USER.format(port=port, app=app))
    return p


def filters_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return list(hcm["http_filters"])


@pytest.mark.envoy
def test_round_trip_keeps_every_line_comment_and_order(tmp_path: Path) -> None:
    src = write(tmp_path)
    out = tmp_path / "out.yaml"
    r = run(src, "-o", out, "--authz", "127.0.0.1:9191")
    assert r.exit_code == 0, r.output
    before, after = src.read_text().splitlines(), out.read_text().splitlines()
    it = iter(after)
    missing = [line for line in before if not any(line == a for a in it)]
    assert missing == [], "lines of the input lost or reordered"  # only additions
    assert guess_indent(src.read_text()) == (2, 4, 2)


def test_dns_names_get_strict_dns_and_work_through_envoy(tmp_path: Path, envoy: Any) -> None:
    with Echo("app") as app, GrpcDouble("authz") as authz:
        port = free_port()
        src = write(tmp_path, port, app.port)
        out = tmp_path / "out.yaml"
        r = run(src, "-o", out, "--authz", f"localhost:{authz.port}")
        assert r.exit_code == 0 and "validate: ok" in r.output, r.output
        doc = yaml.safe_load(out.read_text())
        c = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "ext_authz")
        assert c["type"] == "STRICT_DNS" and c["dns_lookup_family"] == "V4_PREFERRED"
        envoy(doc, name="dns")
        assert httpx.get(f"http://127.0.0.1:{port}/ok").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/deny").status_code == 403
        assert len(authz.requests) == 2  # resolved localhost and called the server
    ip = run(src, "-o", tmp_path / "ip.yaml", "--authz", "127.0.0.1:9191", "--no-validate")
    assert ip.exit_code == 0
    c = next(
        c
        for c in yaml.safe_load((tmp_path / "ip.yaml").read_text())["static_resources"]["clusters"]
        if c["name"] == "ext_authz"
    )
    assert c["type"] == "STATIC"


def test_replace_repoints_an_existing_filter(tmp_path: Path, envoy: Any) -> None:
    with Echo("app") as app, GrpcDouble("authz") as first, GrpcDouble("authz") as second:
        port = free_port()
        src = write(tmp_path, port, app.port)
        once = tmp_path / "once.yaml"
        assert run(src, "-o", once, "--authz", first.address).exit_code == 0
        refused = run(once, "-o", tmp_path / "twice.yaml", "--authz", second.address)
        assert refused.exit_code == 1 and "give --replace" in refused.output
        assert not (tmp_path / "twice.yaml").exists()
        r = run(once, "-o", tmp_path / "twice.yaml", "--authz", second.address, "--replace")
        assert r.exit_code == 0 and "replaced filter 'envoy.filters.http.ext_authz'" in r.output, r.output
        doc = yaml.safe_load((tmp_path / "twice.yaml").read_text())
        assert [f["name"] for f in filters_of(doc)].count("envoy.filters.http.ext_authz") == 1
        envoy(doc, name="replaced")
        assert httpx.get(f"http://127.0.0.1:{port}/ok").status_code == 200
        assert len(second.requests) == 1 and first.requests == []


@pytest.mark.envoy
def test_ratelimit_needs_descriptors_and_replace_keeps_the_domain(tmp_path: Path) -> None:
    src = write(tmp_path)
    r = run(src, "-o", tmp_path / "rl.yaml", "--ratelimit", "127.0.0.1:8081")
    assert r.exit_code == 1 and "would never call" in r.output and "--descriptor remote_address" in r.output
    assert not (tmp_path / "rl.yaml").exists()
    r = run(src, "-o", tmp_path / "rl.yaml", "--ratelimit", "127.0.0.1:8081", "--ratelimit-domain", "web")
    assert r.exit_code == 1  # a domain alone does not make Envoy call either
    r = run(
        src, "-o", tmp_path / "rl.yaml", "--ratelimit", "127.0.0.1:8081", "--descriptor", "remote_address",
        "--ratelimit-domain", "web",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    # the routes now carry rate_limits: re-pointing needs no --descriptor and keeps domain "web"
    r = run(tmp_path / "rl.yaml", "-o", tmp_path / "rl2.yaml", "--ratelimit", "localhost:8082", "--replace")
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load((tmp_path / "rl2.yaml").read_text())
    rl = next(f for f in filters_of(doc) if f["name"] == "envoy.filters.http.ratelimit")
    assert rl["typed_config"]["domain"] == "web"
    vh = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert vh["route_config"]["virtual_hosts"][0]["rate_limits"] == [{"actions": [{"remote_address": {}}]}]


@pytest.mark.envoy
def test_invalid_input_is_reported_as_the_inputs_fault(tmp_path: Path) -> None:
    src = write(tmp_path)
    src.write_text(src.read_text().replace("route: {cluster: app}", "route: {cluster: nowhere}"))
    r = run(src, "-o", tmp_path / "out.yaml", "--authz", "127.0.0.1:9191")
    assert r.exit_code == 1 and "already invalid for Envoy, before any change" in r.output, r.output
    assert "nowhere" in r.output
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.envoy
def test_a_refused_result_is_never_written(tmp_path: Path) -> None:
    src = write(tmp_path)
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm but not really a module")
    out = tmp_path / "out.yaml"
    out.write_text("# the last good result\n")
    r = run(src, "-o", out, "--wasm", f"{junk}:root")
    assert r.exit_code == 1 and "refused the result, so nothing was written" in r.output, r.output
    assert out.read_text() == "# the last good result\n"  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []  # no temp left


@pytest.mark.envoy
def test_workload_identity_labels_telemetry(tmp_path: Path, envoy: Any, server_process: StartServer) -> None:
    with Echo("app") as app, start_extproc(server_process) as telemetry:
        port = free_port()
        src = write(tmp_path, port, app.port)
        out = tmp_path / "out.yaml"
        bare = run(src, "-o", out, "--extproc", telemetry_addr(telemetry), "--no-validate")
        assert "'unknown'" in bare.output  # said before it happens
        r = run(
            src, "-o", out, "--extproc", telemetry_addr(telemetry),
            "--workload", "shop-v1", "--app", "shop", "--version", "v1", "--namespace", "store",
            "--service-account", "shop", "--trust-domain", "example.org",
        )  # fmt: skip
        assert r.exit_code == 0 and "unknown" not in r.output, r.output
        doc = yaml.safe_load(out.read_text())
        assert doc["node"]["metadata"]["principal"] == "spiffe://example.org/ns/store/sa/shop"
        envoy(doc, name="telemetry")
        assert httpx.get(f"http://127.0.0.1:{port}/x").status_code == 200
        deadline = time.monotonic() + 10
        text = ""
        while time.monotonic() < deadline:
            text = telemetry.metrics()
            if "istio_requests_total{" in text:
                break
            time.sleep(0.1)
    lines = [ln for ln in text.splitlines() if ln.startswith("istio_requests_total{")]
    assert lines, text
    assert re.search(r'_workload="shop-v1"', lines[0]) and 'workload_namespace="store"' in lines[0], lines[0]


def telemetry_addr(srv: ServerProcess) -> str:
    return f"127.0.0.1:{srv.port}"


@pytest.mark.envoy
def test_json_stays_json(tmp_path: Path) -> None:
    src = tmp_path / "in.json"
    src.write_text(json.dumps(yaml.safe_load(USER.format(port=10000, app=8000)), indent=2))
    r = run(src, "--authz", "authz.default.svc:9191")
    assert r.exit_code == 0 and "validate: ok" in r.output, r.output
    doc = json.loads((tmp_path / "in.envoykit.json").read_text())
    assert list(doc) == ["static_resources", "admin"]  # key order kept
    assert [f["name"] for f in filters_of(doc)] == [
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.router",
    ]
