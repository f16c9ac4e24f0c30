"""Pure parts of the runner: run-config errors, placeholders, metrics read-back, port remapping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import BaseModel

from envoykit.control.model.loader import load_mesh
from envoykit.control.model.ports import remap_ports
from envoykit.core import ConfigError
from envoykit.core.net import FreePorts
from envoykit.mesh import metrics as pm
from envoykit.mesh.plan import Component
from envoykit.mesh.prometheus import scrape_config
from envoykit.mesh.runconfig import expand, load_run_config
from envoykit.mesh.state import StateDir
from envoykit.mesh.wasm import ensure_wasm_modules

REPO = Path(__file__).resolve().parents[2]


def test_demo_run_config_loads() -> None:
    rc = load_run_config(REPO / "examples" / "apps" / "run.yaml")
    assert set(rc.apps) == {"frontend", "backend"}
    assert "{outbound}" in " ".join(rc.apps["frontend"].command)


def test_run_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "run.yaml"
    bad.write_text("apps:\n  web:\n    command: []\nservers:\n  authz:\n    metrics_port: 70000\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(bad)
    assert err.value.file == str(bad) and err.value.line == 3 and err.value.field == "apps.web.command"
    assert "servers.authz.metrics_port" in str(err.value)


def test_expand_fills_placeholders_and_names_unknown_ones() -> None:
    assert expand(["{python}", "--port", "{port}"], {"python": "py", "port": "80"}, "x") == [
        "py",
        "--port",
        "80",
    ]
    with pytest.raises(ConfigError, match=r"apps.web.command: unknown placeholder in '\{prot\}'"):
        expand(["{prot}"], {"port": "80"}, "apps.web.command")


EXPOSITION = """\
# TYPE istio_requests_total counter
istio_requests_total{destination_service_name="backend",response_code="200"} 90
istio_requests_total{destination_service_name="backend",response_code="503"} 10
istio_requests_total{destination_service_name="frontend",response_code="200"} 7
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{destination_service_name="backend",le="1.0"} 50
istio_request_duration_milliseconds_bucket{destination_service_name="backend",le="5.0"} 90
istio_request_duration_milliseconds_bucket{destination_service_name="backend",le="10.0"} 100
istio_request_duration_milliseconds_bucket{destination_service_name="backend",le="+Inf"} 100
istio_request_duration_milliseconds_count{destination_service_name="backend"} 100
istio_request_duration_milliseconds_sum{destination_service_name="backend"} 230
"""


def test_metrics_totals_groups_and_quantiles() -> None:
    samples = pm.parse(EXPOSITION)
    assert pm.total(samples, "istio_requests_total", destination_service_name="backend") == 100
    assert pm.sum_by(samples, "istio_requests_total", ("destination_service_name",)) == {
        ("backend",): 100,
        ("frontend",): 7,
    }
    # 50 of 100 at or below 1 ms: the median is the bucket's upper bound
    assert pm.quantile(samples, "istio_request_duration_milliseconds", 0.5) == pytest.approx(1.0)
    # rank 90 is the top of the (1, 5] bucket; rank 95 halfway through (5, 10]
    assert pm.quantile(samples, "istio_request_duration_milliseconds", 0.9) == pytest.approx(5.0)
    assert pm.quantile(samples, "istio_request_duration_milliseconds", 0.95) == pytest.approx(7.5)
    assert math.isnan(
        pm.quantile(samples, "istio_request_duration_milliseconds", 0.5, destination_service_name="x")
    )


def test_scrape_config_has_one_job_per_component_with_metrics() -> None:
    comps = [
        Component("authz", "server", ["x"], metrics="127.0.0.1:9101/metrics"),
        Component("web-sidecar", "sidecar", ["x"], metrics="127.0.0.1:15001/stats/prometheus"),
        Component("web", "app", ["x"]),
    ]
    cfg = scrape_config(comps)
    assert [
        (j["job_name"], j["metrics_path"], j["static_configs"][0]["targets"]) for j in cfg["scrape_configs"]
    ] == [
        ("authz", "/metrics", ["127.0.0.1:9101"]),
        ("web-sidecar", "/stats/prometheus", ["127.0.0.1:15001"]),
    ]


def test_free_ports_never_repeat() -> None:
    ports = FreePorts()
    taken = [ports.take() for _ in range(200)]
    assert len(set(taken)) == 200


def test_remap_moves_every_address_and_keeps_shared_ones_equal() -> None:
    from envoykit.control.model.loader import load_mesh
    from envoykit.control.model.mesh import Address, Mesh

    mesh = load_mesh(REPO / "examples" / "mesh.yaml").mesh
    # two fields naming one address must still name one address after the move
    shared = Mesh.model_validate(
        {**mesh.model_dump(mode="json"), "control_plane": {"xds": str(mesh.extensions.authz.address)}}
    )
    moved = remap_ports(shared, new_port=FreePorts().take)

    def addresses(m: Mesh) -> list[Address]:
        found: list[Address] = []

        def walk(v: object) -> None:
            if isinstance(v, Address):
                found.append(v)
            elif isinstance(v, BaseModel):
                for name in type(v).model_fields:
                    walk(getattr(v, name))
            elif isinstance(v, list | tuple):
                for x in v:
                    walk(x)

        walk(m)
        return found

    before, after = addresses(shared), addresses(moved)
    assert len(before) == len(after) >= 10  # xds, servers, workloads and sidecars, gateways
    old_to_new: dict[int, int] = {}
    for a, b in zip(before, after, strict=True):
        assert b.port != a.port and b.host == a.host
        assert old_to_new.setdefault(a.port, b.port) == b.port  # one old port, one new port
    assert len(set(old_to_new.values())) == len(old_to_new)  # distinct old ports stay distinct
    assert moved.control_plane.xds == moved.extensions.authz.address


def test_public_ingress_copy_keeps_the_shared_state_and_files(tmp_path: Path) -> None:
    """What each compose container plans: the control plane serves a copy whose ingress listens on
    0.0.0.0 and whose state directory and Wasm file are still those of the original mesh.yaml."""
    from envoykit.mesh.view import control_state_dir, load

    state = StateDir(tmp_path)
    state.prepare()
    original = load(REPO / "examples" / "mesh.yaml", state)
    copy = load(REPO / "examples" / "mesh.yaml", state, public_ingress=True)
    assert copy.path == state.work / "mesh.yaml"
    assert control_state_dir(copy) == control_state_dir(original).resolve()
    assert [g.address.host for g in copy.model.gateways if g.kind == "ingress"] == ["0.0.0.0"]
    assert copy.ingress.endswith(f":{original.model.gateways[0].address.port}")
    wasm_dir = REPO / "examples" / "wasm"
    assert all(
        Path(w.file).is_absolute() and Path(w.file).parent == wasm_dir for w in copy.model.extensions.wasm
    )


def test_missing_wasm_module_is_built_from_its_example(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("extensions:\n  wasm:\n    - name: hdr\n      file: out/add_header.wasm\n")
    assert ensure_wasm_modules(load_mesh(mesh)) == [tmp_path / "out" / "add_header.wasm"]
    assert (tmp_path / "out" / "add_header.wasm").read_bytes()[:4] == b"\0asm"
    assert ensure_wasm_modules(load_mesh(mesh)) == []  # present now: nothing to do


def test_missing_wasm_module_that_is_no_example_names_the_field(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("api_version: envoykit/v1\nextensions:\n  wasm:\n    - name: x\n      file: nope.wasm\n")
    with pytest.raises(ConfigError) as err:
        ensure_wasm_modules(load_mesh(mesh))
    assert (err.value.line, err.value.field) == (5, "extensions.wasm.0.file")
    assert "nope.wasm does not exist and is not an example filter" in str(err.value)
