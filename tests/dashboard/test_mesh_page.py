"""The dashboard of the demo mesh, in a real headless browser, against real traffic.

``envoykit up`` runs a copy of examples/ on free ports (the control plane without layer-3 validation,
so a config Envoy refuses reaches Envoy and comes back as a NACK). Every assertion reads the rendered
DOM of the page: the graph's nodes and edges, the tables, the control-plane card. Tests share one
mesh and one page and run in file order (the NACK comes last: it edits mesh.yaml). They run twice: with
the dashboard scraping every component itself, and reading Prometheus (when installed). Screenshots
go to build/test-artifacts/.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from envoykit.mesh import Plan, StateDir, demo
from envoykit.mesh.prometheus import prometheus_binary
from tests.dashboard.browser import ARTIFACTS, needs_browser, page

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.envoy, needs_browser(), pytest.mark.timeout(300)]


# appended to the policy copy: a rule under trial, logged and counted, never enforced
DRY_RUN_RULE = """

@deny_rule(paths=["/dry-run"], dry_run=True)
def would_deny_dry_run(req: Request):
    return deny(403, "/dry-run is about to be closed\\n")
"""


@dataclass
class Mesh:
    proc: subprocess.Popen[bytes]
    mesh_file: Path
    plan: Plan
    target: demo.DemoTarget
    out: Path

    @property
    def dashboard(self) -> str:
        return str(self.plan.info["dashboard"])


@pytest.fixture(scope="module", params=["scrape", "prometheus"])
def mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The demo mesh with the dashboard scraping every component itself, then reading Prometheus."""
    with_prometheus = request.param == "prometheus"
    if with_prometheus and prometheus_binary() is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("dash")
    examples = tmp / "examples"
    shutil.copytree(REPO / "examples", examples)
    with (examples / "policies" / "mesh.py").open("a") as policy:
        policy.write(DRY_RUN_RULE)
    run = yaml.safe_load((examples / "apps" / "run.yaml").read_text())
    run["control_plane"] = {"args": ["--no-envoy-validate"]}  # let Envoy itself refuse a bad push
    (examples / "apps" / "run.yaml").write_text(yaml.safe_dump(run))
    state = StateDir(tmp / "state")
    out = tmp / "up.out"
    mesh_file = examples / "mesh.yaml"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "envoykit.cli", "up", str(mesh_file)),
                *("--free-ports", "--state-dir", str(state.root)),
                "--prometheus" if with_prometheus else "--no-prometheus",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        deadline = time.monotonic() + 180
        while b"mesh ready in" not in out.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"envoykit up did not get ready:\n{out.read_text()[-6000:]}")
            time.sleep(0.3)
        plan = state.read_plan()
        assert ("prometheus" in plan.info) == with_prometheus
        # on free ports the control plane serves (and watches) a copy in the state directory
        served = Path(plan.info["mesh_file"])
        yield Mesh(proc, served, plan, demo.DemoTarget.from_plan(plan), out)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


@pytest.fixture(scope="module")
def browser_page(mesh: Mesh) -> Iterator[Any]:
    with page(1440, 720) as pg:
        pg.mesh = mesh  # for wait_js's report
        pg.goto(mesh.dashboard)
        pg.wait_for_selector("g.node", timeout=30_000)
        yield pg
        assert pg.errors == [], pg.errors


def shot(pg: Any, mesh: Mesh, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    source = "prometheus" if "prometheus" in mesh.plan.info else "scrape"
    path = ARTIFACTS / f"dashboard-{source}-{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    return path


def traffic(mesh: Mesh, n: int, path: str = "/", headers: dict[str, str] | None = None) -> list[int]:
    with httpx.Client(base_url=mesh.target.ingress, timeout=10) as c:
        return [
            c.get(path, headers={demo.CLIENT_HEADER: f"dash-{i}", **(headers or {})}).status_code
            for i in range(n)
        ]


def edge_attr(pg: Any, edge_id: str, attr: str) -> str | None:
    el = pg.query_selector(f'g.edge[data-id="{edge_id}"]')
    return None if el is None else el.get_attribute(attr)


def wait_js(pg: Any, predicate: str, arg: Any = None, timeout_s: float = 60) -> None:
    """Wait until the JS ``predicate`` (a function of ``arg``) is true on the page; on a timeout fail
    with what the dashboard served and what the runner printed (a restarted component shows there)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        pg.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000, polling=250)
    except PlaywrightTimeout:
        mesh: Mesh = pg.mesh
        try:
            state = httpx.get(f"{mesh.dashboard}/api/state", timeout=5).json()
            seen = {k: state[k] for k in ("graph", "authz", "ratelimit", "errors", "health")}
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            seen = {"error": str(exc)}
        runner = "\n".join(
            line for line in mesh.out.read_text(errors="replace").splitlines() if "│" not in line
        )
        pytest.fail(
            f"not on the page after {timeout_s}s: {predicate} ({arg})\nstate: {seen}\nrunner:\n{runner[-3000:]}"
        )


MESH_EDGES = [
    "gw:ingress->svc:frontend",
    "svc:frontend->wl:frontend-v1",
    "wl:frontend-v1->svc:backend",
    "svc:backend->wl:backend-v1",
    "svc:backend->wl:backend-v2",
]


def test_every_service_workload_and_gateway_is_drawn(mesh: Mesh, browser_page: Any) -> None:
    ids = {el.get_attribute("data-id") for el in browser_page.query_selector_all("g.node")}
    want = {
        "gw:ingress",
        "gw:egress",
        "svc:frontend",
        "svc:backend",
        "wl:frontend-v1",
        "wl:backend-v1",
        "wl:backend-v2",
    }
    assert want <= ids, ids
    # every Envoy is connected to the control plane: no node is drawn as disconnected
    wait_js(browser_page, "() => document.querySelectorAll('g.node.disconnected').length === 0")
    assert "5 of 5 connected" in browser_page.inner_text("#control-body")
    # the dashboard's own health and metrics
    assert httpx.get(f"{mesh.dashboard}/healthz", timeout=10).status_code == 200
    assert (
        'envoykit_dashboard_polls_total{result="ok"}'
        in httpx.get(f"{mesh.dashboard}/metrics", timeout=10).text
    )
    # every component's health, the apps (probed: they have no metrics) included
    names = {c.name for c in mesh.plan.components} - {"dashboard", "prometheus"}
    wait_js(
        browser_page,
        """(names) => names.every((n) => document.querySelector(`#health li[data-name="${n}"][data-up="true"]`))""",
        sorted(names),
    )


def test_traffic_draws_every_edge_with_rate_latency_and_mtls(mesh: Mesh, browser_page: Any) -> None:
    # 100 requests reach backend v2 (10 %) at least once but with a chance of 0.9^100
    assert traffic(mesh, 100) == [200] * 100
    wait_js(
        browser_page,
        """(ids) => ids.every((id) => {
            const e = document.querySelector(`g.edge[data-id="${id}"]`);
            return e && parseFloat(e.dataset.rps) > 0 && e.dataset.mtls === 'mutual_tls';
        })""",
        MESH_EDGES,
    )
    for edge in MESH_EDGES:
        el = browser_page.query_selector(f'g.edge[data-id="{edge}"]')
        text = (el.text_content() or "") if el else ""
        assert "rps" in text and "p50" in text and "p99" in text and "mTLS" in text, (edge, text)
        assert "ok" in (el.get_attribute("class") or ""), edge  # no 5xx: drawn green
    # the canary card shows an observed share for both versions
    canary = browser_page.inner_text('#canary [data-route="backend/canary"]')
    assert "weight 90%" in canary and "weight 10%" in canary, canary
    shot(browser_page, mesh, "traffic")


def test_rates_move(mesh: Mesh, browser_page: Any) -> None:
    edge = "gw:ingress->svc:frontend"
    before = int(edge_attr(browser_page, edge, "data-requests") or 0)
    assert traffic(mesh, 40) == [200] * 40
    # the count since start grows by what was sent, the rate is up
    wait_js(
        browser_page,
        """([id, n]) => { const e = document.querySelector(`g.edge[data-id="${id}"]`);
                          return e && parseInt(e.dataset.requests) >= n && parseFloat(e.dataset.rps) > 0; }""",
        [edge, before + 40],
    )
    # with no traffic for longer than the window (10 s), the rate falls back to zero
    wait_js(
        browser_page,
        """(id) => { const e = document.querySelector(`g.edge[data-id="${id}"]`);
                     return e && parseFloat(e.dataset.rps) === 0; }""",
        edge,
        timeout_s=60,
    )


def _cell(pg: Any, selector: str) -> int:
    el = pg.query_selector(selector)
    if el is None:
        return 0
    return int(el.inner_text().split("(")[0].strip().replace(",", "") or 0)


def test_denied_request_shows_under_its_rule(mesh: Mesh, browser_page: Any) -> None:
    cell = 'tr[data-rule="admin_needs_token"] td.deny'
    before = _cell(browser_page, cell)
    codes = traffic(mesh, 3, "/admin")
    assert codes == [401] * 3
    wait_js(
        browser_page,
        """([sel, n]) => { const c = document.querySelector(sel);
                           return c && parseInt(c.textContent.replace(/,/g, '')) >= n; }""",
        [cell, before + 3],
    )
    assert "some" in (browser_page.get_attribute(cell, "class") or "")  # drawn as a deny (red)


def test_dry_run_would_deny_shows_under_its_rule(mesh: Mesh, browser_page: Any) -> None:
    cell = 'tr[data-rule="would_deny_dry_run"] td.dry'
    before = _cell(browser_page, cell)
    assert traffic(mesh, 3, "/dry-run") == [200] * 3  # not enforced
    wait_js(
        browser_page,
        """([sel, n]) => { const c = document.querySelector(sel);
                           return c && parseInt(c.textContent.replace(/,/g, '')) >= n; }""",
        [cell, before + 3],
    )


def test_over_limit_shows_under_its_descriptor(mesh: Mesh, browser_page: Any) -> None:
    cell = 'tr[data-key="client_id"] td.over'
    before = _cell(browser_page, cell)
    check = demo.rate_limit(mesh.target)
    assert check.ok, check.summary
    limited = check.figures["limited"]
    wait_js(
        browser_page,
        """([sel, n]) => { const c = document.querySelector(sel);
                           return c && parseInt(c.textContent.replace(/,/g, '')) >= n; }""",
        [cell, before + limited],
    )


def test_clicking_a_service_shows_its_config_and_access_log(mesh: Mesh, browser_page: Any) -> None:
    browser_page.click('g.node[data-id="svc:backend"]')
    browser_page.wait_for_selector("#detail section.config", timeout=20_000)
    nodes = {s.get_attribute("data-node") for s in browser_page.query_selector_all("#detail section.config")}
    assert nodes == {"sidecar~backend-v1", "sidecar~backend-v2"}
    routes = browser_page.inner_text('#detail section.config[data-node="sidecar~backend-v1"] table.routes')
    # the canary route as the control plane sends it: weighted clusters 90/10
    assert "canary" in routes and "(90)" in routes and "(10)" in routes, routes
    clusters = browser_page.inner_text(
        '#detail section.config[data-node="sidecar~backend-v1"] table.clusters'
    )
    assert "outbound|80|v1|backend.default" in clusters, clusters
    # the newest lines about backend from the access logs the mesh writes (the authz decision log;
    # with the telemetry server, its JSON access log): every row names backend where it went
    browser_page.wait_for_selector("#detail table.log tbody tr", timeout=10_000)
    rows = [r.inner_text() for r in browser_page.query_selector_all("#detail table.log tbody tr")]
    assert rows and all("\tbackend" in r for r in rows), rows[:5]
    shot(browser_page, mesh, "detail")
    browser_page.click("#detail-close")


def test_nack_shows_with_envoys_message(mesh: Mesh, browser_page: Any) -> None:
    doc = yaml.safe_load(mesh.mesh_file.read_text())
    ingress = next(vs for vs in doc["virtual_services"] if vs["name"] == "ingress")
    # RE2 has no lookbehind: the model accepts the regex, Envoy refuses the routes (layer 3 is off)
    ingress["http"].insert(
        0,
        {
            "name": "lookbehind",
            "match": [{"uri": {"regex": "/(?<=a)b"}}],
            "route": [{"destination": {"host": "frontend"}}],
        },
    )
    mesh.mesh_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    browser_page.wait_for_selector('#nacks li.nack[data-node="ingress~ingress"]', timeout=40_000)
    nack = browser_page.inner_text('#nacks li.nack[data-node="ingress~ingress"]')
    assert "RDS" in nack and "invalid perl operator" in nack, nack
    # Envoy keeps serving the last version it accepted
    assert traffic(mesh, 3) == [200] * 3
    path = shot(browser_page, mesh, "nack")
    assert path.stat().st_size > 10_000
