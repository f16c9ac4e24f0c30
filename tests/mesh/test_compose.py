"""compose/: the committed docker-compose.yml is the generated one and is valid compose; with a Docker
engine, the compose mesh comes up and answers the demo checks through its published ingress."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.mesh import demo
from envoykit.mesh.planner import PlanOptions, plan_mesh
from envoykit.mesh.state import StateDir

REPO = Path(__file__).resolve().parents[2]
MESH = REPO / "examples" / "mesh.yaml"
COMPOSE = REPO / "compose" / "docker-compose.yml"

needs_mesh = pytest.mark.skipif(
    not MESH.exists(), reason="examples/mesh.yaml (control-plane room) is not there yet"
)


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@needs_mesh
def test_committed_compose_file_is_the_generated_one() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "envoykit.cli",
            "compose",
            "examples/mesh.yaml",
            "--check",
            "-o",
            str(COMPOSE),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@needs_mesh
@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_file_is_valid_compose() -> None:
    out = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    services = set(out.stdout.split())
    assert {"net", "control-plane", "prometheus", "grafana", "ingress"} <= services
    # every other service is one component of the plan, started by the runner as itself
    doc = yaml.safe_load(COMPOSE.read_text())
    for name in services - {"net", "prometheus", "grafana"}:
        cmd = doc["services"][name]["command"]
        assert cmd[:3] == ["envoykit", "up", "examples/mesh.yaml"] and cmd[cmd.index("--only") + 1] == name
        assert doc["services"][name]["network_mode"] == "service:net"


# -- with a Docker engine: the compose mesh itself -----------------------------------------------------

docker = pytest.mark.skipif(not _engine_answers(), reason="no Docker engine answers `docker info` here")


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE)


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    ok = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    return "docker compose" if ok else "docker-compose"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up --build -d"]


@pytest.fixture(scope="session")
def demo_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the demo checks against, from a local plan of the same mesh.yaml."""
    state = StateDir(tmp_path_factory.mktemp("plan"))
    state.prepare()
    return plan_mesh(MESH, state, PlanOptions(prometheus=False, build_wasm=False)).info["demo"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


@needs_mesh
@docker
@pytest.mark.docker
@pytest.mark.timeout(900)
def test_compose_mesh_passes_the_demo(
    docker_services: Any, docker_ip: str, demo_facts: dict[str, Any]
) -> None:
    ingress = f"http://{docker_ip}:{docker_services.port_for('net', 8080)}"
    docker_services.wait_until_responsive(check=lambda: _answers(f"{ingress}/"), timeout=600, pause=2)
    target = demo.DemoTarget(
        ingress=ingress,
        telemetry_metrics="",
        backend_inbound=[],
        canary_weights=demo_facts["canary_weights"],
        wasm_header=demo_facts["wasm_header"],
        ratelimit_per_client=demo_facts["ratelimit_per_client"],
    )
    for scenario in (demo.mesh_path, demo.jwt, demo.rate_limit, demo.canary, demo.wasm):
        check = scenario(target)
        assert check.ok, f"{check.name}: {check.summary}"
    # Prometheus (official image, compose/prometheus.yml) scraped the telemetry server
    prom = f"http://{docker_ip}:{docker_services.port_for('net', 9090)}"
    deadline = time.monotonic() + 120
    total = 0.0
    while time.monotonic() < deadline and total == 0:
        r = httpx.get(f"{prom}/api/v1/query", params={"query": "sum(istio_requests_total)"}, timeout=5)
        result = r.json()["data"]["result"]
        total = float(result[0]["value"][1]) if result else 0.0
        time.sleep(2)
    assert total > 0
