"""The whole demo mesh, end to end: ``envoykit up examples/mesh.yaml --free-ports`` as a user runs it,
then every capability checked through the ingress, then a clean stop.

The tests of this module share one running mesh and run in file order: the authz-kill test comes late
(it restarts a component) and the stop test last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from envoykit.mesh import Plan, StateDir, demo
from envoykit.mesh import metrics as pm
from tests.mesh.helpers import group_members
from tests.wasmhost.toolchain import path_without_c_compilers

REPO = Path(__file__).resolve().parents[2]
MESH = REPO / "examples" / "mesh.yaml"

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.timeout(600),  # the first test waits for up, which may build the demo filter (zig)
    pytest.mark.skipif(not MESH.exists(), reason="examples/mesh.yaml (control-plane room) is not there yet"),
]


@dataclass
class RunningMesh:
    proc: subprocess.Popen[bytes]
    state: StateDir
    plan: Plan
    target: demo.DemoTarget
    out: Path

    def output(self) -> str:
        return self.out.read_text(errors="replace")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    tmp = tmp_path_factory.mktemp("mesh")
    state = StateDir(tmp / "state")
    out = tmp / "up.out"
    # As on a fresh machine: no demo module yet and no system C compiler; up builds the C filter
    # with the compiler envoykit's own install brings (zig cc from the ziglang wheel).
    (REPO / "examples" / "wasm" / "add_header.wasm").unlink(missing_ok=True)
    path = os.pathsep.join([str(Path(sys.executable).parent), path_without_c_compilers(tmp)])
    env = dict(os.environ, PATH=path, ENVOYKIT_WASM_BUILD=str(tmp / "wasm-build"))
    env.pop("CLANG", None)
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "envoykit.cli",
                "up",
                str(MESH),
                "--free-ports",
                "--state-dir",
                str(state.root),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    try:
        deadline = time.monotonic() + 480  # 180 s, plus zig's first build of its wasi-libc (cold cache)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"envoykit up exited with {proc.returncode}:\n{out.read_text()[-6000:]}")
            # running in status.json, and the runner printed its table and the ready line
            if (
                state.status_path.exists()
                and state.read_status().state == "running"
                and b"mesh ready in" in (out.read_bytes())
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"mesh not running after 480s:\n{out.read_text()[-6000:]}")
        plan = state.read_plan()
        yield RunningMesh(proc, state, plan, demo.DemoTarget.from_plan(plan), out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


def _check(check: demo.Check) -> None:
    assert check.ok, f"{check.name}: {check.summary}\n{check.figures}"


def test_start_to_ready_time(mesh: RunningMesh, capsys: pytest.CaptureFixture[str]) -> None:
    st = mesh.state.read_status()
    assert st.ready_s is not None
    assert all(c.state == "ready" for c in st.components.values()), st.components
    with capsys.disabled():
        print(f"\n[mesh] {len(mesh.plan.components)} components, start-to-ready {st.ready_s:.2f}s")
    assert "mesh ready in" in mesh.output()


def test_status_shows_every_component_and_the_control_plane(mesh: RunningMesh) -> None:
    envoys = sum(c.kind in ("sidecar", "gateway") for c in mesh.plan.components)
    deadline = time.monotonic() + 15  # the control plane rewrites its status file once a second
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "envoykit.cli", "status", "--state-dir", str(mesh.state.root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if f"{envoys} of {envoys} Envoys connected" in out.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{envoys} of {envoys} Envoys connected" in out.stdout, out.stdout
    for c in mesh.plan.components:
        assert c.name in out.stdout


def test_control_status_and_ca_show_find_the_running_mesh(mesh: RunningMesh, tmp_path: Path) -> None:
    """Without --state-dir, from a folder that is not the mesh's: `control status` and `ca show`
    find the running mesh's control-plane state as `envoykit status` does ($ENVOYKIT_STATE_DIR)."""
    env = {**os.environ, "ENVOYKIT_STATE_DIR": str(mesh.state.root)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "envoykit.cli", *args],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
        )  # fmt: skip

    st = cli("control", "status", "-o", "json")
    assert st.returncode == 0, st.stdout + st.stderr
    doc = json.loads(st.stdout)
    assert doc["running"] is True and doc["status_file"] == mesh.plan.info["control_status"]
    ca = cli("ca", "show", "-o", "json")
    assert ca.returncode == 0, ca.stdout + ca.stderr
    shown = json.loads(ca.stdout)
    assert shown["trust_domain"] == "envoykit.local"
    assert shown["state_dir"] == str(Path(mesh.plan.info["control_status"]).parent)


def test_request_reaches_backend_over_mtls_with_frontend_identity(mesh: RunningMesh) -> None:
    check = demo.mesh_path(mesh.target)
    _check(check)
    # the identity came from the client certificate frontend's sidecar presented (XFCC is only set
    # on a TLS connection with a verified peer certificate)
    assert "URI=spiffe://" in check.figures["xfcc"] and "/sa/frontend" in check.figures["xfcc"]


def test_call_from_outside_the_mesh_is_refused(mesh: RunningMesh) -> None:
    # without a mesh certificate the TLS handshake fails; with another identity's, authz says 403
    _check(demo.outside_refused(mesh.target))
    _check(demo.wrong_identity(mesh.target))


def test_admin_needs_a_jwt(mesh: RunningMesh) -> None:
    _check(demo.jwt(mesh.target))


def test_rate_limit_per_client(mesh: RunningMesh) -> None:
    check = demo.rate_limit(mesh.target)
    _check(check)
    # another client is not affected by the first one's limit
    with httpx.Client(base_url=mesh.target.ingress, timeout=10) as c:
        assert c.get("/", headers={demo.CLIENT_HEADER: f"other-{uuid.uuid4().hex[:6]}"}).status_code == 200


def test_canary_split_within_tolerance(mesh: RunningMesh) -> None:
    _check(demo.canary(mesh.target, n=200, tolerance_pct=8.0))


def test_wasm_filter_adds_its_header(mesh: RunningMesh) -> None:
    """The demo filter was built by up itself, without a system C compiler (see the fixture)."""
    assert "built wasm module" in mesh.output() and (REPO / "examples" / "wasm" / "add_header.wasm").exists()
    check = demo.wasm(mesh.target)
    _check(check)
    assert check.figures["value"] == mesh.plan.info["demo"]["wasm_value"]


def test_egress_refuses_hosts_not_allowed(mesh: RunningMesh) -> None:
    _check(demo.egress_refused(mesh.target))


def _backend_requests(mesh: RunningMesh) -> float:
    samples = pm.scrape(mesh.target.telemetry_metrics)
    return pm.total(
        samples, "istio_requests_total", reporter="destination", destination_service_name="backend"
    )


def _settled(mesh: RunningMesh) -> float:
    """The backend count once earlier requests stopped arriving: two readings 6 s apart agree (the
    telemetry server reads Envoy's own histograms, which Envoy merges every 5 s)."""
    last = _backend_requests(mesh)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(6)
        now = _backend_requests(mesh)
        if now == last:
            return now
        last = now
    return last


def test_telemetry_counts_what_was_sent(mesh: RunningMesh) -> None:
    before = _settled(mesh)
    n = 25
    with httpx.Client(base_url=mesh.target.ingress, timeout=10) as c:
        codes = [c.get("/telemetry", headers={demo.CLIENT_HEADER: f"t-{i}"}).status_code for i in range(n)]
    assert codes == [200] * n
    # counted in Envoy, read at its next stats flush: wait for the count to settle, then compare exactly
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _backend_requests(mesh) - before < n:
        time.sleep(0.2)
    assert _settled(mesh) - before == n


def test_servers_count_their_decisions(mesh: RunningMesh) -> None:
    # after the scenarios above: denies (token, identity) and allows from authz, 429s from ratelimit
    check = demo.decisions(mesh.target)
    _check(check)
    assert check.figures["authz"].get("deny by only_frontend_calls_backend", 0) >= 1
    assert check.figures["ratelimit"]["client_id"]["over_limit"] >= 1


def test_prometheus_scrapes_every_component(mesh: RunningMesh) -> None:
    prom = mesh.plan.info.get("prometheus")
    if not prom:
        pytest.skip("prometheus is not installed: the runner runs none")
    wanted = {c.name for c in mesh.plan.components if c.metrics and c.kind != "prometheus"}
    health: dict[str, str] = {}
    deadline = time.monotonic() + 30  # the first scrape comes within one 5 s interval
    while time.monotonic() < deadline:
        targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if set(health) == wanted and all(h == "up" for h in health.values()):
            break
        time.sleep(1)
    assert health == dict.fromkeys(wanted, "up")


def test_authz_killed_fails_closed_then_heals(mesh: RunningMesh) -> None:
    authz = mesh.state.read_status().components["authz"]
    restarts = authz.restarts
    os.kill(authz.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while group_members(authz.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    with httpx.Client(base_url=mesh.target.ingress, timeout=10) as c:
        first = c.get("/", headers={demo.CLIENT_HEADER: "authz-down"})
        assert first.status_code in (403, 500, 502, 503), first.text  # denied, never let through
        deadline = time.monotonic() + 60
        healed = None
        while time.monotonic() < deadline:
            r = c.get("/", headers={demo.CLIENT_HEADER: f"heal-{time.monotonic()}"})
            if r.status_code == 200:
                healed = r
                break
            time.sleep(0.2)
    assert healed is not None, "requests did not succeed again after the authz server was restarted"
    # the runner notices readiness on its next probe, a moment after traffic already flows again
    deadline = time.monotonic() + 15
    while mesh.state.read_status().components["authz"].state != "ready" and time.monotonic() < deadline:
        time.sleep(0.1)
    st = mesh.state.read_status().components["authz"]
    assert st.restarts == restarts + 1 and st.state == "ready"
    assert "exited" in mesh.output() and "authz" in mesh.output()


def test_stop_leaves_no_process(mesh: RunningMesh) -> None:
    pgids = mesh.state.read_status().pgids
    assert pgids and any(group_members(g) for g in pgids)
    mesh.proc.send_signal(signal.SIGTERM)
    assert mesh.proc.wait(60) == 0, mesh.output()[-4000:]
    assert mesh.state.read_status().state == "stopped"
    assert {g: group_members(g) for g in pgids if group_members(g)} == {}
