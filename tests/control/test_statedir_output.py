"""State-directory discovery (control status, ca from a running mesh's folder) and `-o json|yaml`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.statedir import find_control_state

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def mesh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out as `envoykit up examples/mesh.yaml` leaves it: the runner's plan names the
    control plane's state directory (.envoykit/control), which holds the CA and the status file."""
    root = tmp_path / "repo"
    control = root / ".envoykit" / "control"
    (root / ".envoykit" / "mesh").mkdir(parents=True)
    CertificateAuthority(control, "envoykit.local")
    (control / "control-status.json").write_text(
        json.dumps({"mesh": "examples/mesh.yaml", "generation": 1, "applied_at": 1.0, "nodes": ["a"]})
    )
    plan = {"components": [], "info": {"control_status": str(control / "control-status.json")}}
    (root / ".envoykit" / "mesh" / "plan.json").write_text(json.dumps(plan))
    monkeypatch.delenv("ENVOYKIT_STATE_DIR", raising=False)
    monkeypatch.chdir(root)
    return root


def test_control_status_and_ca_show_find_the_running_mesh(mesh_folder: Path) -> None:
    found = find_control_state(None)
    assert found.path == mesh_folder / ".envoykit" / "control" and "started in" in found.how
    assert find_control_state(None, cwd=mesh_folder / "examples" / "deeper").path == found.path
    st = run("control", "status", "-o", "json")
    assert st.exit_code == 0, st.output
    assert json.loads(st.output)["nodes"] == ["a"]
    ca = run("ca", "show")
    assert ca.exit_code == 0 and "trust domain: envoykit.local" in ca.output, ca.output
    doc = json.loads(run("ca", "show", "-o", "json").output)
    assert doc["trust_domain"] == "envoykit.local" and doc["root"]["not_after"].startswith("20")
    assert doc["state_dir"] == str(mesh_folder / ".envoykit" / "control")
    y = yaml.safe_load(run("ca", "show", "-o", "yaml").output)
    assert y == doc


def test_a_found_mesh_without_ca_never_suggests_ca_init(mesh_folder: Path) -> None:
    import shutil

    shutil.rmtree(mesh_folder / ".envoykit" / "control" / "ca")
    r = run("ca", "show")
    assert r.exit_code == 1 and "ca init" not in r.output and "started in" in r.output, r.output


def test_nothing_running_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENVOYKIT_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    r = run("control", "status")
    assert r.exit_code == 1 and "not running" in r.output
    r = run("ca", "show")
    assert r.exit_code == 1 and "no running mesh found from here" in r.output


def test_control_nodes_and_validate_json() -> None:
    mesh = str(REPO / "examples" / "mesh.yaml")
    nodes = json.loads(run("control", "nodes", mesh, "-o", "json").output)
    assert nodes[0]["node_id"] == "sidecar~frontend-v1"
    assert nodes[0]["principal"] == "spiffe://envoykit.local/ns/default/sa/frontend"
    v = run("validate", mesh, "--no-envoy", "-o", "json")
    assert v.exit_code == 0, v.output
    doc = json.loads(v.output)
    assert doc["ok"] is True and doc["layers"] == ["schema", "references", "translate"]


def test_validate_json_error_names_file_line_field(tmp_path: Path) -> None:
    src = (REPO / "examples" / "mesh.yaml").read_text()
    line = next(i for i, ln in enumerate(src.splitlines(), 1) if "timeout: 500ms" in ln)
    bad = tmp_path / "mesh.yaml"
    bad.write_text(src.replace("timeout: 500ms", "timeot: 500ms"))
    r = run("validate", str(bad), "-o", "json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["ok"] is False and doc["error"] == {
        "file": str(bad),
        "line": line,
        "field": "extensions.authz.timeot",
        "message": "unknown field 'timeot' (did you mean 'timeout'?)",
    }
    text = run("validate", str(bad))
    assert "Extra inputs" not in text.output and "did you mean 'timeout'" in text.output
