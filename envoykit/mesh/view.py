"""What the runner needs from the control plane's mesh model, in one small view (:class:`MeshView`).

The runner plans processes; it does not translate. It reads the validated model through
``envoykit.control`` (the loader, the node list, the bootstrap builder) and keeps here only what a
process list needs: addresses, which servers are used, the Envoys and the apps.

With ``free_ports`` the model is copied with every port moved to a free one (one new port per old port,
so every reference stays consistent), its relative file paths made absolute, and the control plane's
state directory moved under the runner's; the copy is written to ``<state>/work/mesh.yaml`` and that is
the file the control plane serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from envoykit.control.model.loader import load_mesh, parse_mesh
from envoykit.control.model.mesh import Mesh
from envoykit.control.model.nodes import NodeInfo, mesh_nodes
from envoykit.control.model.ports import remap_ports
from envoykit.control.model.types import Address
from envoykit.core import envoy_binary
from envoykit.core.net import FreePorts
from envoykit.mesh.state import StateDir
from envoykit.mesh.wasm import ensure_wasm_modules


@dataclass(frozen=True)
class WorkloadView:
    """An app process: ``name`` (workload), ``service``, ``version``, where it listens, its sidecar's
    outbound listener (None without a sidecar)."""

    name: str
    service: str
    version: str
    address: Address
    outbound: Address | None


@dataclass(frozen=True)
class EnvoyView:
    """An Envoy: ``name`` (workload or gateway), ``kind`` (sidecar/ingress/egress), node id, admin address,
    the workload it fronts (sidecars) and the address shown in the status table."""

    name: str
    kind: str
    node_id: str
    admin: Address
    workload: str | None
    address: str
    info: NodeInfo


@dataclass
class MeshView:
    """The runner's view of a validated mesh (see the module docstring). ``telemetry`` is the ext_proc
    telemetry server's address, ``access_log`` the access-log telemetry server's (None when disabled)."""

    path: Path
    model: Mesh
    xds: Address
    authz: Address
    ratelimit: Address
    telemetry: Address
    access_log: Address | None
    processors: dict[str, Address]
    used_servers: set[str]
    workloads: list[WorkloadView]
    envoys: list[EnvoyView]
    ingress: str


def absolute_paths(mesh: Mesh, base: Path) -> Mesh:
    """Make the paths mesh.yaml names (Wasm modules, gateway certificates, the authz policy directory,
    the control plane's state directory) absolute against ``base``, so a copy written elsewhere means the same files."""

    def absolute(p: str) -> str:
        return str(p if Path(p).is_absolute() else (base / p).resolve())

    wasm = [w.model_copy(update={"file": absolute(w.file)}) for w in mesh.extensions.wasm]
    gateways = [
        g.model_copy(
            update={
                "tls": g.tls.model_copy(
                    update={"cert_file": absolute(g.tls.cert_file), "key_file": absolute(g.tls.key_file)}
                )
            }
        )
        if g.tls
        else g
        for g in mesh.gateways
    ]
    control = mesh.control_plane.model_copy(update={"state_dir": absolute(mesh.control_plane.state_dir)})
    authz = mesh.extensions.authz
    if authz.policy_dir is not None:
        authz = authz.model_copy(update={"policy_dir": absolute(authz.policy_dir)})
    if authz.gate is not None and not authz.gate.startswith(("http://", "https://")):
        authz = authz.model_copy(update={"gate": absolute(authz.gate)})
    if authz.decision_log is not None:
        authz = authz.model_copy(update={"decision_log": absolute(authz.decision_log)})
    return mesh.model_copy(
        update={
            "extensions": mesh.extensions.model_copy(update={"wasm": wasm, "authz": authz}),
            "gateways": gateways,
            "control_plane": control,
        }
    )


def load(
    path: Path,
    state: StateDir,
    *,
    free_ports: FreePorts | None = None,
    public_ingress: bool = False,
    build_wasm: bool = False,
) -> MeshView:
    """Load ``path`` into a :class:`MeshView`: mesh.yaml is read and validated once, here.

    With ``build_wasm`` the example Wasm modules the mesh names are built when missing
    (:func:`envoykit.mesh.wasm.ensure_wasm_modules`). With ``free_ports`` (a copy on ports from that
    allocator, with its own control-plane state) or ``public_ingress`` (the ingress gateway on 0.0.0.0),
    a copy is written to ``<state>/work/mesh.yaml`` and served instead.

    Raises:
        ConfigError: the file is invalid, or a missing Wasm module cannot be built (file, line, field).
    """
    loaded = load_mesh(path)
    if build_wasm:
        ensure_wasm_modules(loaded)
    mesh = loaded.mesh
    if free_ports or public_ingress:
        mesh = absolute_paths(mesh, path.parent)
    if free_ports:
        mesh = remap_ports(mesh, new_port=free_ports.take)
        control_state = state.work / "control"
        mesh = mesh.model_copy(
            update={"control_plane": mesh.control_plane.model_copy(update={"state_dir": str(control_state)})}
        )
    if public_ingress:
        gateways = [
            g.model_copy(update={"address": g.address.model_copy(update={"host": "0.0.0.0"})})
            if g.kind == "ingress"
            else g
            for g in mesh.gateways
        ]
        mesh = mesh.model_copy(update={"gateways": gateways})
    if free_ports or public_ingress:
        path = state.work / "mesh.yaml"
        text = yaml.safe_dump(mesh.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
        path.write_text(text)
        mesh = parse_mesh(text, str(path))  # the copy must pass the same validation as the original
    return view(mesh, path)


def view(mesh: Mesh, path: Path) -> MeshView:
    """Build the runner's view of a validated ``mesh`` read from ``path``."""
    used: set[str] = set()
    exts = [svc.extensions for svc in mesh.services] + [g.extensions for g in mesh.gateways]
    for e in exts:
        if e.authz is not None:
            used.add("authz")
        if e.ratelimit is not None:
            used.add("ratelimit")
        if e.telemetry:
            used.add("telemetry")
        used.update(e.processors)
    workloads = [
        WorkloadView(
            name=wl.name,
            service=svc.name,
            version=wl.version,
            address=wl.address,
            outbound=wl.sidecar.outbound if wl.sidecar else None,
        )
        for svc, wl in mesh.workloads()
    ]
    envoys = []
    for info in mesh_nodes(mesh).values():
        if info.kind == "sidecar" and info.workload is not None and info.workload.sidecar is not None:
            shown = f"inbound {info.workload.sidecar.inbound}, outbound {info.workload.sidecar.outbound}"
        elif info.gateway is not None:
            shown = f"http://{info.gateway.address}"
        else:
            shown = ""
        envoys.append(
            EnvoyView(
                name=info.name,
                kind=info.kind,
                node_id=info.id,
                admin=info.admin,
                workload=info.workload.name if info.workload else None,
                address=shown,
                info=info,
            )
        )
    ingress = next((g for g in mesh.gateways if g.kind == "ingress"), None)
    scheme = "https" if ingress is not None and ingress.tls else "http"
    return MeshView(
        path=path,
        model=mesh,
        xds=mesh.control_plane.xds,
        authz=mesh.extensions.authz.address,
        ratelimit=mesh.extensions.ratelimit.address,
        telemetry=mesh.extensions.telemetry.address,
        access_log=mesh.extensions.access_log.address if mesh.extensions.access_log.enabled else None,
        processors={p.name: p.address for p in mesh.extensions.processors},
        used_servers=used,
        workloads=workloads,
        envoys=envoys,
        ingress=f"{scheme}://{ingress.address}" if ingress else "",
    )


def serve_args(mesh: MeshView, json_access_log: Path | None = None) -> list[str]:
    """Arguments of ``envoykit`` that run the control plane for ``mesh`` (``json_access_log``: where the
    Envoys write their JSON access-log lines, unless mesh.yaml names a file)."""
    extra = ["--json-access-log", str(json_access_log)] if json_access_log is not None else []
    return ["control", "serve", str(mesh.path), *extra]


def write_bootstrap(mesh: MeshView, envoy: EnvoyView, directory: Path) -> Path:
    """Write the bootstrap of ``envoy`` (node, ADS cluster, node token) to ``directory/<name>.json``."""
    from envoykit.control.translate.bootstrap import bootstrap
    from envoykit.control.xds.tokens import NodeTokens
    from envoykit.core.envoy import write_config

    directory.mkdir(parents=True, exist_ok=True)
    token = NodeTokens(control_state_dir(mesh)).token_for(envoy.node_id)
    return write_config(bootstrap(envoy.info, mesh.xds, token), directory / f"{envoy.name}.json")


def control_state_dir(mesh: MeshView) -> Path:
    """The control plane's state directory (CA, node-token key), resolved as the control plane does:
    relative paths against mesh.yaml's folder."""
    sd = Path(mesh.model.control_plane.state_dir)
    return sd if sd.is_absolute() else mesh.path.absolute().parent / sd


def envoy_command(bootstrap: Path, log_level: str) -> list[str]:
    """The Envoy command line for a mesh proxy (one worker thread: the machine is small)."""
    return [
        envoy_binary(),
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "-l",
        log_level,
        "--drain-time-s",
        "1",
        # file access loggers (the JSON access log) write their buffer every second, not every 10 s
        "--file-flush-interval-msec",
        "1000",
    ]
