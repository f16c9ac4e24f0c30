"""``envoykit up`` and the authz native gate: the gate comes from the directory the authz server
serves, or the plan is refused; the server writes the gate document where mesh.yaml's ``gate`` points;
a copy of mesh.yaml on free ports keeps naming the same directory and document."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit.core import ConfigError
from envoykit.mesh.planner import PlanOptions, plan_mesh
from envoykit.mesh.state import StateDir

MESH = """
extensions:
  authz: {address: 127.0.0.1:9191, policy_dir: policies, gate: state/authz-gate.json}
services:
  - name: web
    extensions: {authz: {}}
    workloads:
      - name: web-v1
        address: 127.0.0.1:9001
        sidecar: {inbound: 127.0.0.1:16001, outbound: 127.0.0.1:17001, admin: 127.0.0.1:15001}
"""

RUN = """
apps:
  web: {command: ["{python}", "-c", "pass"]}
servers:
  authz: {args: ["--policy-dir", "POLICIES"]}
"""


def _setup(tmp_path: Path, served: str) -> tuple[Path, StateDir]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text("kind: AuthorizationPolicy\nmetadata: {name: a}\n")
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "run.yaml").write_text(RUN.replace("POLICIES", served))
    state = StateDir(tmp_path / "state")
    state.prepare()
    return mesh, state


def test_gate_and_server_share_the_policy_dir(tmp_path: Path) -> None:
    mesh, state = _setup(tmp_path, "{mesh_dir}/policies")
    opts = PlanOptions(prometheus=False, free_ports=True, build_wasm=False)
    plan = plan_mesh(mesh, state, opts)
    authz = next(c for c in plan.components if c.name == "authz")
    assert str(tmp_path / "policies") in authz.command
    # the server publishes the gate where the control plane reads it
    assert authz.command[-2:] == ["--gate-file", str(tmp_path / "state" / "authz-gate.json")]
    served = state.work / "mesh.yaml"  # the copy on free ports names the same directory
    assert f"policy_dir: {tmp_path / 'policies'}" in served.read_text()
    assert f"gate: {tmp_path / 'state' / 'authz-gate.json'}" in served.read_text()


def test_a_gate_on_another_directory_is_refused(tmp_path: Path) -> None:
    mesh, state = _setup(tmp_path, "{mesh_dir}/elsewhere")
    with pytest.raises(ConfigError, match="the native gate must compile from the server's directory"):
        plan_mesh(mesh, state, PlanOptions(prometheus=False, build_wasm=False))


def test_server_and_proxies_share_the_decision_log(tmp_path: Path) -> None:
    mesh, state = _setup(tmp_path, "{mesh_dir}/policies")
    mesh.write_text(
        MESH.replace("gate: state/authz-gate.json", "gate: state/authz-gate.json, decision_log: d.log")
    )
    opts = PlanOptions(prometheus=False, free_ports=True, build_wasm=False)
    authz = next(c for c in plan_mesh(mesh, state, opts).components if c.name == "authz")
    assert authz.command[-4:] == [
        "--decision-log",
        str(tmp_path / "d.log"),
        "--decision-log-sample-allow",
        "1.0",
    ]
    # the server's args naming another file: refused (one file holds every decision)
    (tmp_path / "apps" / "run.yaml").write_text(
        RUN.replace("POLICIES", '{mesh_dir}/policies", "--decision-log", "-')
    )
    with pytest.raises(ConfigError, match="writes its decision log to -"):
        plan_mesh(mesh, state, opts)
