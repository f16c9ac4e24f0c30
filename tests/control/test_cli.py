"""The commands: `envoykit validate`, `envoykit bootstrap`, `envoykit envoy inject`, and `envoykit control
serve` as a process feeding a real Envoy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.core.net import free_port, wait_for_port
from tests.control.apps import Echo
from tests.control.doubles import GrpcDouble
from tests.control.meshkit import get, wait_until, write_mesh
from tests.control.test_traffic_envoy import gateway_mesh, to

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.envoy
def test_validate_runs_three_layers(tmp_path: Path) -> None:
    good = write_mesh(tmp_path / "mesh.yaml", gateway_mesh([("b1", "v1", 9)], [{"route": [to()]}]))
    r = run("validate", str(good))
    assert r.exit_code == 0, r.output
    assert (
        "schema ok, references ok" in r.output and "envoy --mode validate ok for ingress~ingress" in r.output
    )
    bad = write_mesh(
        tmp_path / "bad.yaml",
        gateway_mesh([("b1", "v1", 9)], [{"route": [to(weight=60), to(weight=30)]}]),
    )
    r = run("validate", str(bad))
    assert r.exit_code == 1 and "bad.yaml:" in r.output and "weights sum to 90, not 100" in r.output
    nacked = write_mesh(
        tmp_path / "re2.yaml",
        gateway_mesh([("b1", "v1", 9)], [{"match": [{"uri": {"regex": "(?<=x)y"}}], "route": [to()]}]),
    )
    r = run("validate", str(nacked))
    assert r.exit_code == 1 and "envoy --mode validate refused node ingress~ingress" in r.output


def test_bootstrap_writes_node_metadata_and_token(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    state = tmp_path / "state"
    r = run(
        "bootstrap",
        "--node",
        "backend-v2",
        str(REPO / "examples" / "mesh.yaml"),
        "-o",
        str(out),
        "--state-dir",
        str(state),
        "--xds",
        "127.0.0.1:1234",
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["node"]["id"] == "sidecar~backend-v2"
    assert doc["node"]["metadata"]["principal"] == "spiffe://envoykit.local/ns/default/sa/backend"
    meta = doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]
    from envoykit.control.xds.tokens import NodeTokens

    assert meta["key"] == "x-envoykit-node-token"
    assert NodeTokens(state).verify("sidecar~backend-v2", meta["value"])
    assert run("bootstrap", "--node", "nope", str(REPO / "examples" / "mesh.yaml")).exit_code == 1


STATIC = {
    "static_resources": {
        "listeners": [
            {
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.http_connection_manager",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                    "stat_prefix": "main",
                                    "route_config": {
                                        "name": "local",
                                        "virtual_hosts": [
                                            {
                                                "name": "all",
                                                "domains": ["*"],
                                                "routes": [
                                                    {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
                                                ],
                                            }
                                        ],
                                    },
                                    "http_filters": [
                                        {
                                            "name": "envoy.filters.http.router",
                                            "typed_config": {
                                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                            },
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ],
        "clusters": [
            {
                "name": "app",
                "type": "STATIC",
                "load_assignment": {
                    "cluster_name": "app",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {"address": "127.0.0.1", "port_value": 9000}
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        ],
    }
}


@pytest.mark.envoy
def test_inject_patches_validates_and_refuses(tmp_path: Path, envoy: Any) -> None:
    src = tmp_path / "envoy.yaml"
    src.write_text(yaml.safe_dump(STATIC))
    out = tmp_path / "patched.yaml"
    r = run(
        "envoy",
        "inject",
        str(src),
        "-o",
        str(out),
        "--authz",
        "127.0.0.1:9191",
        "--ratelimit",
        "127.0.0.1:8081",
        "--descriptor",
        "remote_address",
        "--extproc",
        "127.0.0.1:9292",
    )
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(out.read_text())
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoykit.telemetry",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ]
    assert hcm["route_config"]["virtual_hosts"][0]["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    assert {c["name"] for c in doc["static_resources"]["clusters"]} == {
        "app",
        "ext_authz",
        "rate_limit_service",
        "ext_proc_telemetry",
    }
    # the patched config runs: requests are checked by the authz server named on the command line
    with Echo("app") as app, GrpcDouble("authz") as authz:
        live = yaml.safe_load(yaml.safe_dump(STATIC))
        listener = live["static_resources"]["listeners"][0]
        listener["address"]["socket_address"]["port_value"] = port = free_port()
        ep = live["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        ep["endpoint"]["address"]["socket_address"]["port_value"] = app.port
        src.write_text(yaml.safe_dump(live))
        r = run("envoy", "inject", str(src), "-o", str(out), "--authz", authz.address)
        assert r.exit_code == 0, r.output
        envoy(yaml.safe_load(out.read_text()), name="injected")
        assert get(f"http://127.0.0.1:{port}/ok").status_code == 200
        assert get(f"http://127.0.0.1:{port}/deny").status_code == 403
        assert len(authz.requests) == 2
    # refusals say why
    again = run("envoy", "inject", str(out), "--authz", "127.0.0.1:9191")
    assert again.exit_code == 1 and "already has" in again.output
    lds = tmp_path / "lds.yaml"
    lds.write_text(yaml.safe_dump({"dynamic_resources": {"lds_config": {"ads": {}}}}))
    r = run("envoy", "inject", str(lds), "--authz", "127.0.0.1:9191")
    assert r.exit_code == 1 and "listeners come over LDS" in r.output


@pytest.mark.envoy
def test_control_serve_process_feeds_envoy_and_drains_on_sigterm(tmp_path: Path, envoy: Any) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        xds, metrics = free_port(), free_port()
        state = tmp_path / "state"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        log = open(tmp_path / "control.log", "wb")  # noqa: SIM115 (closed after the process ends)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "envoykit.cli",
                "control",
                "serve",
                str(path),
                "--address",
                f"127.0.0.1:{xds}",
                "--state-dir",
                str(state),
                "--metrics-port",
                str(metrics),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_port(xds, timeout=30)
            boot = tmp_path / "ingress.json"
            r = run(
                "bootstrap",
                "--node",
                "ingress~ingress",
                str(path),
                "--xds",
                f"127.0.0.1:{xds}",
                "--state-dir",
                str(state),
                "-o",
                str(boot),
            )
            assert r.exit_code == 0, r.output
            envoy(json.loads(boot.read_text()), name="ingress")
            url = f"http://{mesh['gateways'][0]['address']}/x"
            assert get(url).headers["x-upstream"] == "v1"
            mesh["virtual_services"][0]["http"] = [{"route": [to(subset="v2")]}]
            write_mesh(path, mesh)  # the process watches the file
            wait_until(lambda: get(url).headers["x-upstream"] == "v2", timeout=30)
            status = json.loads((state / "control-status.json").read_text())
            assert status["nodes"] == ["ingress~ingress"]
            text = get(f"http://127.0.0.1:{metrics}/metrics").text
            assert 'envoykit_xds_pushes_total{type="RDS"}' in text
            assert "envoykit_xds_connected_streams 1.0" in text
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
            log.close()
        assert code == 0, (tmp_path / "control.log").read_text()[-3000:]


def test_control_nodes_and_status(tmp_path: Path) -> None:
    r = run("control", "nodes", str(REPO / "examples" / "mesh.yaml"))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("sidecar~frontend-v1\tspiffe://envoykit.local/ns/default/sa/frontend")
    r = run("control", "status", "--state-dir", str(tmp_path))
    assert r.exit_code == 1 and "the control plane is not running" in r.output
    (tmp_path / "control-status.json").write_text('{"generation": 3, "applied_at": 0.5, "nodes": []}')
    doc = json.loads(run("control", "status", "--state-dir", str(tmp_path), "-o", "json").output)
    assert doc["generation"] == 3 and doc["running"] is True
    assert doc["applied_at"] == "1970-01-01T00:00:00.500000Z"  # ISO 8601, not epoch seconds
    assert "generation 3" in run("control", "status", "--state-dir", str(tmp_path)).output
