"""Changes that would empty the mesh are refused while Envoys serve, through real processes: an empty or
truncated mesh.yaml under `envoykit control serve mesh.yaml` (a relative path, which must reload), and
`envoykit validate` of an empty mesh."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from envoykit.core.net import free_port, wait_for_port
from envoykit.mesh.table import control_summary
from tests.control.apps import Echo
from tests.control.meshkit import wait_until, write_mesh
from tests.control.test_changes_envoy import Hammer
from tests.control.test_traffic_envoy import gateway_mesh, to

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def envoykit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envoykit.cli", *args], cwd=cwd, env=ENV, capture_output=True, text=True
    )


def test_validate_refuses_an_empty_mesh(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    r = envoykit("validate", "empty.yaml", cwd=tmp_path)
    assert r.returncode != 0 and "empty.yaml: services: the mesh has no services" in r.stderr, r
    only_gw = gateway_mesh([("b1", "v1", 9)], [{"route": [to()]}])
    only_gw["services"], only_gw["virtual_services"] = [], []
    write_mesh(tmp_path / "gw.yaml", only_gw)
    r = envoykit("validate", "--no-envoy", "gw.yaml", cwd=tmp_path)
    assert r.returncode != 0 and "the mesh has no services" in r.stderr, r
    no_nodes = gateway_mesh([("b1", "v1", 9)], [{"route": [to()]}])
    no_nodes["gateways"], no_nodes["virtual_services"] = [], []
    write_mesh(tmp_path / "nodes.yaml", no_nodes)
    r = envoykit("validate", "--no-envoy", "nodes.yaml", cwd=tmp_path)
    assert r.returncode != 0 and "the mesh has no Envoys" in r.stderr, r


def _cut_before(text: str, key: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[: next(i for i, line in enumerate(lines) if line.startswith(key))])


def _status(state: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((state / "control-status.json").read_text()))
    except (OSError, ValueError):
        return {}


@pytest.mark.envoy
def test_empty_and_truncated_mesh_refused_while_envoy_serves(tmp_path: Path, envoy: Any) -> None:
    with Echo("v1") as v1, Echo("v2") as v2:
        mesh = gateway_mesh(
            [("backend-v1", "v1", v1.port), ("backend-v2", "v2", v2.port)], [{"route": [to(subset="v1")]}]
        )
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        good = path.read_text()
        xds = free_port()
        state = tmp_path / "state"
        log = open(tmp_path / "control.log", "wb")  # noqa: SIM115 (closed after the process ends)
        args = ["control", "serve", "mesh.yaml", "--address", f"127.0.0.1:{xds}", "--state-dir", "state"]
        proc = subprocess.Popen(  # a relative mesh path: its watcher must still see the changes
            [sys.executable, "-m", "envoykit.cli", *args, "--no-envoy-validate"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=ENV,
        )
        try:
            wait_for_port(xds, timeout=30)
            boot = tmp_path / "ingress.json"
            r = envoykit(
                "bootstrap", "--node", "ingress~ingress", "mesh.yaml", "--xds", f"127.0.0.1:{xds}",
                "--state-dir", "state", "-o", str(boot), cwd=tmp_path,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            envoy(json.loads(boot.read_text()), name="ingress")
            wait_until(lambda: len(_status(state).get("streams", [])) == 1, timeout=15)
            url = f"http://{mesh['gateways'][0]['address']}/x"
            with Hammer(url) as h:
                wait_until(lambda: len(h.results) > 20)
                cases = [
                    ("", "the mesh has no services"),  # `: > mesh.yaml`
                    (_cut_before(good, "gateways:"), "the mesh has no Envoys"),
                    (_cut_before(good, "virtual_services:"), "without any route"),
                    (good[: len(good) // 2], "mesh.yaml"),  # cut mid-line: invalid YAML or model
                ]
                for text, reason in cases:
                    before = _status(state).get("last_refused_at") or 0
                    path.write_text(text)
                    wait_until(
                        lambda: (_status(state).get("last_refused_at") or 0) > before,  # noqa: B023
                        timeout=15,
                    )
                    st = _status(state)
                    assert reason in st["last_error"] and st["generation"] == 0, st
                    n = len(h.results)
                    wait_until(lambda: len(h.results) > n + 20)  # noqa: B023 (called at once)
                summary = "\n".join(control_summary(_status(state)))
                assert "last change refused" in summary and "serving the last good version" in summary
                r = envoykit("control", "status", "--state-dir", "state", cwd=tmp_path)
                assert "last change refused at 20" in r.stdout  # an ISO 8601 time
                r = envoykit("control", "status", "--state-dir", "state", "-o", "json", cwd=tmp_path)
                doc = json.loads(r.stdout)
                assert doc["last_refused_at"].endswith("Z") and doc["last_error"]
                # a good change after the refusals is applied (the relative path reloads)
                mesh["virtual_services"][0]["http"] = [{"route": [to(subset="v2")]}]
                write_mesh(path, mesh)
                wait_until(lambda: h.last() == ["v2"] * 5, timeout=30)
            codes = Counter(code for code, _ in h.results)
            assert codes == {200: len(h.results)}, codes
            wait_until(lambda: _status(state).get("generation") == 1, timeout=5)  # written once a second
            assert _status(state)["last_error"] is None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
            log.close()
        assert code == 0, (tmp_path / "control.log").read_text()[-3000:]


def test_refusals_name_the_connected_nodes(tmp_path: Path) -> None:
    """The checks on their own: a change dropping a connected node, and one leaving it without routes."""
    from envoykit.control.model.loader import parse_mesh
    from envoykit.control.translate.guard import check_connected_kept, check_not_empty
    from envoykit.control.translate.translation import translate
    from envoykit.core.errors import ConfigError

    mesh = gateway_mesh([("b1", "v1", 9)], [{"route": [to()]}])
    text = yaml.safe_dump(mesh, sort_keys=False)
    full = translate(parse_mesh(text), tmp_path)
    check_not_empty(full)
    no_routes = translate(parse_mesh(_cut_before(text, "virtual_services:")), tmp_path)
    check_connected_kept(no_routes, full, [])  # nobody connected: a legitimate change
    with pytest.raises(ConfigError, match="ingress~ingress without any route"):
        check_connected_kept(no_routes, full, ["ingress~ingress"])
    mesh["gateways"][0]["name"] = "edge"
    mesh["virtual_services"][0]["gateways"] = ["edge"]
    renamed = translate(parse_mesh(yaml.safe_dump(mesh)), tmp_path)
    with pytest.raises(ConfigError, match=r"removes 1 connected node\(s\) \(ingress~ingress\)"):
        check_connected_kept(renamed, full, ["ingress~ingress"])
