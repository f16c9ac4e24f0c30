"""The mesh model: schema (layer 1) and semantics (layer 2) with errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from envoykit.control.model.loader import load_mesh, parse_mesh
from envoykit.control.model.mesh import Mesh
from envoykit.control.model.ports import remap_ports
from envoykit.control.model.types import Address, parse_duration
from envoykit.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = """\
api_version: envoykit/v1
services:
  - name: backend
    workloads:
      - name: backend-v1
        address: 127.0.0.1:9001
        sidecar: {inbound: 127.0.0.1:9101, outbound: 127.0.0.1:9201, admin: 127.0.0.1:9301}
      - name: backend-v2
        version: v2
        address: 127.0.0.1:9002
        sidecar: {inbound: 127.0.0.1:9102, outbound: 127.0.0.1:9202, admin: 127.0.0.1:9302}
virtual_services:
  - name: backend
    hosts: [backend]
    http:
      - route:
          - destination: {host: backend, subset: v1}
            weight: 90
          - destination: {host: backend, subset: v2}
            weight: 10
"""


def error_of(text: str, tmp_path: Path) -> ConfigError:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_mesh(path)
    return err.value


def test_base_mesh_loads() -> None:
    mesh = parse_mesh(BASE)
    assert [w.name for _, w in mesh.workloads()] == ["backend-v1", "backend-v2"]
    assert mesh.service("backend.default") is mesh.services[0]
    assert mesh.service_account(mesh.services[0]) == "backend"


def test_demo_mesh_is_valid() -> None:
    loaded = load_mesh(REPO / "examples" / "mesh.yaml")
    kinds = sorted({g.kind for g in loaded.mesh.gateways})
    assert kinds == ["egress", "ingress"]
    assert all(s.mtls == "STRICT" for s in loaded.mesh.services)


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        ("weight: 10", "weight: 5", 15, "virtual_services.0.http.0.route", "weights sum to 95, not 100"),
        (
            "subset: v2",
            "subset: v3",
            17,
            "virtual_services.0.http.0.route.1.destination.subset",
            "no subset 'v3'",
        ),
        (
            "host: backend, subset: v1",
            "host: nope, subset: v1",
            17,
            "virtual_services.0.http.0.route.0.destination.host",
            "unknown service 'nope'",
        ),
        (
            "127.0.0.1:9202",
            "127.0.0.1:9101",
            12,
            "services.0.workloads.1.sidecar.outbound",
            "already used by services.0.workloads.0.sidecar.inbound",
        ),
        (
            "version: v2",
            "versoin: v2",
            10,
            "services.0.workloads.1.versoin",
            "unknown field 'versoin' (did you mean 'version'?)",
        ),
        (
            "address: 127.0.0.1:9001",
            "address: localhost",
            5,
            "services.0.workloads.0.address",
            "expected host:port",
        ),
        (
            "hosts: [backend]",
            "hosts: [backend]\n    gateways: [ingress]",
            15,
            "virtual_services.0.gateways.0",
            "unknown ingress gateway",
        ),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, message: str
) -> None:
    assert old in BASE
    err = error_of(BASE.replace(old, new, 1), tmp_path)
    assert err.file and err.file.endswith("mesh.yaml")
    assert err.field == field
    assert message in err.message
    assert err.line is not None and abs(err.line - line) <= 2, (err.line, str(err))
    assert str(err).startswith(f"{err.file}:{err.line}: {field}: ")


def test_more_semantic_checks(tmp_path: Path) -> None:
    strict_without_sidecar = BASE.replace(
        "        sidecar: {inbound: 127.0.0.1:9101, outbound: 127.0.0.1:9201, admin: 127.0.0.1:9301}\n", "", 1
    ).replace("  - name: backend\n", "  - name: backend\n    mtls: STRICT\n", 1)
    assert "mtls STRICT needs a sidecar on every workload" in str(error_of(strict_without_sidecar, tmp_path))
    dup = (
        BASE
        + "  - name: backend\n    hosts: [backend]\n    http: [{route: [{destination: {host: backend}}]}]\n"
    )
    assert "duplicate name 'backend'" in str(error_of(dup, tmp_path))
    dup_route = BASE.replace(
        "      - route:\n", "      - route: [{destination: {host: backend}}]\n      - route:\n", 1
    )
    assert "duplicate route" in str(error_of(dup_route, tmp_path))
    bad_yaml = BASE.replace("hosts: [backend]", "hosts: [backend", 1)
    assert error_of(bad_yaml, tmp_path).message.startswith("invalid YAML")


def test_durations_and_addresses() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2s") == 2.0 and parse_duration(3) == 3.0 and parse_duration("1m") == 60.0
    with pytest.raises(ValueError):
        parse_duration("soon")
    a = Address.model_validate("10.0.0.1:8080")
    assert (a.host, a.port, str(a)) == ("10.0.0.1", 8080, "10.0.0.1:8080")
    assert Address.model_validate(9000).host == "127.0.0.1"


def test_model_round_trips_through_yaml() -> None:
    mesh = parse_mesh(BASE)
    dumped = yaml.safe_dump(mesh.model_dump(mode="json", exclude_defaults=True))
    assert parse_mesh(dumped) == mesh


def test_remap_ports_moves_every_address_consistently() -> None:
    mesh = load_mesh(REPO / "examples" / "mesh.yaml").mesh
    counter = iter(range(30000, 31000))
    table: dict[int, int] = {}
    moved = remap_ports(mesh, table, new_port=lambda: next(counter))
    assert isinstance(moved, Mesh)
    assert moved.control_plane.xds.port == table[15010]
    assert moved.gateways[0].address.port == table[8080]
    assert moved.services[0].port == 80  # a service port is a name, not a socket
    old: list[Any] = []
    new: list[Any] = []

    def ports(m: Mesh, out: list[Any]) -> None:
        out.append(m.control_plane.xds.port)
        for _, wl in m.workloads():
            out.append(wl.address.port)
            assert wl.sidecar is not None
            out += [wl.sidecar.inbound.port, wl.sidecar.outbound.port, wl.sidecar.admin.port]

    ports(mesh, old)
    ports(moved, new)
    assert new == [table[p] for p in old] and not set(new) & set(old)
    assert parse_mesh(yaml.safe_dump(moved.model_dump(mode="json"))) == moved  # still valid


def test_missing_tls_file_is_named(tmp_path: Path) -> None:
    text = BASE + (
        "gateways:\n  - name: in\n    kind: ingress\n    address: 127.0.0.1:8080\n    admin: 127.0.0.1:15000\n"
        "    tls: {cert_file: certs/in.crt, key_file: certs/in.key}\n"
    )
    err = error_of(text, tmp_path)
    assert err.field == "gateways.0.tls.cert_file" and "no such file: certs/in.crt" in err.message


async def test_changes_of_referenced_files_reload(tmp_path: Path) -> None:
    import asyncio

    from envoykit.control.server import ControlPlane

    (tmp_path / "plugin.wasm").write_bytes(b"\0asm-1")
    text = BASE + "extensions:\n  wasm: [{name: p, file: plugin.wasm}]\n"
    (tmp_path / "mesh.yaml").write_text(text)
    cp = ControlPlane(tmp_path / "mesh.yaml", address="127.0.0.1:0", state_dir=tmp_path / "state")
    await cp.start()
    try:
        await asyncio.sleep(0.3)  # let the watchers start
        (tmp_path / "plugin.wasm").write_bytes(b"\0asm-2")
        for _ in range(100):
            if cp.config.generation >= 1:
                break
            await asyncio.sleep(0.1)
        assert cp.config.generation >= 1
    finally:
        await cp.stop(0.1)
