"""``envoykit up --plan``, ``status`` and ``logs`` as a user runs them: separate processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from envoykit.mesh import Plan, StateDir
from tests.mesh.helpers import backend, frontend, get_json, group_members

ENVOYKIT = [sys.executable, "-m", "envoykit.cli"]


def _envoykit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ENVOYKIT, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.server
def test_up_status_logs_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    be = backend()
    plan = Plan([be, frontend(be.probe.port)])
    plan_file = tmp_path / "plan.json"
    plan.write(plan_file)
    state = StateDir(tmp_path / "state")
    with open(tmp_path / "up.out", "w") as log:
        up = subprocess.Popen(
            [*ENVOYKIT, "up", "--plan", str(plan_file), "--state-dir", str(state.root), "--grace", "5"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            state.status_path.exists() and state.read_status().state == "running"
        ):
            assert up.poll() is None, (tmp_path / "up.out").read_text()
            time.sleep(0.1)
        assert state.read_status().state == "running"

        out = _envoykit("status", "--state-dir", str(state.root))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "frontend" in out.stdout and "backend" in out.stdout and "ready" in out.stdout
        out = _envoykit("status", "--state-dir", str(state.root), "-o", "json")
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(out.stdout)
        assert doc["ok"] is True and doc["state"] == "running" and doc["started_at"].endswith("Z")
        assert {c["name"]: (c["state"], c["healthy"]) for c in doc["components"]} == {
            "backend": ("ready", True),
            "frontend": ("ready", True),
        }

        # a second runner on the same state directory is refused
        again = _envoykit("up", "--plan", str(plan_file), "--state-dir", str(state.root))
        assert again.returncode == 1 and "already running" in again.stderr

        assert get_json(f"{plan.get('frontend').address}/via")[1]["backend"]["path"] == "/via"
        out = _envoykit("logs", "backend", "--state-dir", str(state.root), "-n", "5")
        assert out.returncode == 0 and '"event": "serving"' in out.stdout
        out = _envoykit("logs", "nope", "--state-dir", str(state.root))
        assert out.returncode == 1 and "components: backend, frontend" in out.stderr

        # a killed component is restarted by the runner, which says so
        os.kill(state.read_status().components["backend"].pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and state.read_status().components["backend"].restarts < 1:
            time.sleep(0.1)
        st = state.read_status().components["backend"]
        assert st.restarts == 1
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(30)
    text = (tmp_path / "up.out").read_text()
    assert code == 0, text
    assert "mesh ready in" in text and "exited backend with code -9; restarting in" in text.replace("\n", " ")
    assert "stopped; no process left" in text
    final = state.read_status()
    assert final.state == "stopped"
    assert all(group_members(g) == [] for g in final.pgids)
    out = _envoykit("status", "--state-dir", str(state.root))
    assert out.returncode == 1 and "stopped" in out.stdout
    out = _envoykit("status", "--state-dir", str(state.root), "-o", "yaml")
    assert out.returncode == 1 and yaml.safe_load(out.stdout)["state"] == "stopped"


@pytest.mark.server
def test_up_refuses_a_bad_mesh_naming_file_line_and_field(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "api_version: envoykit/v1\n"
        "services:\n"
        "  - name: web\n"
        "    workloads:\n"
        "      - name: web-v1\n"
        "        address: 127.0.0.1:notaport\n"
    )
    out = _envoykit("up", str(mesh), "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 1
    assert f"{mesh}:6: services.0.workloads.0.address" in out.stderr, out.stderr


@pytest.mark.server
def test_up_refuses_a_service_without_a_command(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "api_version: envoykit/v1\n"
        "services:\n"
        "  - name: web\n"
        "    mtls: DISABLE\n"
        "    workloads: [{name: web-v1, address: 127.0.0.1:9999}]\n"
    )
    run_config = tmp_path / "run.yaml"
    run_config.write_text("apps: {}\n")
    out = _envoykit("up", str(mesh), "--run-config", str(run_config), "--state-dir", str(tmp_path / "state"))
    assert out.returncode == 1
    assert "no command for service 'web' (workload web-v1); add apps.web.command" in out.stderr, out.stderr
