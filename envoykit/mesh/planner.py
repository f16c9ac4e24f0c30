"""Plan a mesh: turn mesh.yaml (+ the run config) into the processes ``envoykit up`` runs.

Start order (each level waits for the readiness of the previous ones)::

    control-plane (gRPC health on the xDS port)
    authz, ratelimit, telemetry, extproc-telemetry, processors (gRPC health)   apps (GET /healthz)
    one sidecar Envoy per workload (admin /ready: its listeners, clusters and certificates arrived)
    gateways (admin /ready)
    prometheus (/-/ready)
    dashboard (GET /healthz: its first poll is done)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.types import Address
from envoykit.core import ConfigError
from envoykit.core.net import FreePorts
from envoykit.mesh import view as mview
from envoykit.mesh.facts import demo_facts
from envoykit.mesh.plan import Component, Plan, Probe
from envoykit.mesh.prometheus import prometheus_binary, prometheus_component
from envoykit.mesh.runconfig import RunConfig, ServerRun, expand, load_run_config
from envoykit.mesh.state import StateDir

CONTROL = "control-plane"
#: the JSON access log of the telemetry server, in the state's ``logs/`` (read by ``envoykit logs access``)
ACCESS_LOG = "access.json"


@dataclass
class PlanOptions:
    """Choices of ``envoykit up``.

    Attributes:
        run_config: the run config file (default ``apps/run.yaml`` beside mesh.yaml).
        free_ports: move every port of the mesh (and of the servers' metrics) to a free one.
        prometheus: run Prometheus when it is installed.
        prometheus_port: its web port (ignored with ``free_ports``: a free one is taken).
        envoy_log_level: Envoy's ``-l``.
        python: the Python that runs envoykit and the apps.
        public_ingress: serve the ingress gateway on 0.0.0.0 (in a container, for published ports).
        build_wasm: build missing example Wasm modules (not needed to only list the processes).
        dashboard: run the live mesh page (``envoykit dashboard``).
        dashboard_port: its port (ignored with ``free_ports``).
    """

    run_config: Path | None = None
    free_ports: bool = False
    prometheus: bool = True
    prometheus_port: int = 9090
    envoy_log_level: str = "info"
    python: str = sys.executable
    public_ingress: bool = False
    build_wasm: bool = True
    dashboard: bool = True
    dashboard_port: int = 9095


def _envoykit(python: str, *args: str) -> list[str]:
    return [python, "-m", "envoykit.cli", *args]


def _port(wanted: int, ports: FreePorts | None) -> int:
    """``wanted``, or a free port when the mesh runs on free ports (or ``wanted`` is 0)."""
    if ports is None and wanted:
        return wanted
    return (ports or FreePorts()).take()


def _server(
    name: str,
    sub: str,
    address: Address,
    run: ServerRun,
    values: dict[str, str],
    ports: FreePorts | None,
    extra: tuple[str, ...] = (),
) -> Component:
    metrics = _port(run.metrics_port, ports)
    args = [*extra, *expand(run.args, values, f"servers.{name}.args")]
    return Component(
        name=name,
        kind="server",
        command=_envoykit(
            values["python"], sub, "serve", "--address", str(address), "--metrics-port", str(metrics), *args
        ),
        probe=Probe("grpc", address.port, timeout_s=60),
        address=f"grpc://{address}",
        metrics=f"127.0.0.1:{metrics}/metrics",
    )


def _check_gate_policy_dir(model: Mesh, mesh_path: Path, served: Path | None, rc_path: Path) -> None:
    """The native gate must compile from the directory the authz server serves: else Envoy and the
    server would decide by different policies.

    Raises:
        ConfigError: ``extensions.authz.policy_dir`` names another directory than ``--policy-dir``.
    """
    authz = model.extensions.authz
    if authz.policy_dir is None or not authz.native_gate:
        return
    gate_dir = (mesh_path.parent / authz.policy_dir).resolve()
    if served is None or served.resolve() != gate_dir:
        raise ConfigError(
            f"extensions.authz.policy_dir is {gate_dir} but the authz server serves {served}: the native "
            "gate must compile from the server's directory (or set native_gate: false)",
            file=str(rc_path),
            field="servers.authz.args",
        )


def _publish_gate(model: Mesh, mesh_path: Path, authz: Component) -> None:
    """Have the authz server write the gate document where mesh.yaml's ``extensions.authz.gate``
    tells the control plane to read it (a file; a URL is the server's own ``/gate``)."""
    cfg = model.extensions.authz
    if cfg.gate is None or not cfg.native_gate or cfg.gate.startswith(("http://", "https://")):
        return
    if "--gate-file" not in authz.command:
        authz.command.extend(["--gate-file", str((mesh_path.parent / cfg.gate).resolve())])


def _share_decision_log(model: Mesh, mesh_path: Path, authz: Component, rc_path: Path) -> None:
    """Have the authz server write its decision log to ``extensions.authz.decision_log``, the file the
    proxies append their gate's native decisions to, with the same sampling: one file holds every
    decision (docs/authz.md, "Every decision in one log").

    Raises:
        ConfigError: the server's args already name another ``--decision-log``.
    """
    cfg = model.extensions.authz
    if cfg.decision_log is None:
        return
    path = mesh_path.parent / cfg.decision_log
    if "--decision-log" in authz.command[:-1]:
        given = authz.command[authz.command.index("--decision-log") + 1]
        if given == "-" or Path(given).absolute() != path.absolute():
            raise ConfigError(
                f"extensions.authz.decision_log is {path.absolute()} but the authz server writes its "
                f"decision log to {given}: drop --decision-log from its args (envoykit up passes the "
                "same file), or unset decision_log",
                file=str(rc_path),
                field="servers.authz.args",
            )
        return
    authz.command.extend(["--decision-log", str(path.absolute())])
    if "--decision-log-sample-allow" not in authz.command:
        authz.command.extend(["--decision-log-sample-allow", str(cfg.decision_log_sample_allow)])


def _arg_value(components: list[Component], name: str, flag: str) -> Path | None:
    """The value after ``flag`` in the command of component ``name`` (None if absent)."""
    for c in components:
        if c.name == name and flag in c.command[:-1]:
            return Path(c.command[c.command.index(flag) + 1])
    return None


def _apps(mesh: mview.MeshView, rc: RunConfig, rc_path: Path, values: dict[str, str]) -> list[Component]:
    """One app process per workload, with the command the run config gives its service."""
    apps: list[Component] = []
    for wl in mesh.workloads:
        app = rc.apps.get(wl.service)
        if app is None:
            raise ConfigError(
                f"no command for service {wl.service!r} (workload {wl.name}); add apps.{wl.service}.command",
                file=str(rc_path),
                field="apps",
            )
        wl_values = {
            **values,
            "port": str(wl.address.port),
            "host": wl.address.host,
            "version": wl.version,
            "workload": wl.name,
            "service": wl.service,
            "outbound": str(wl.outbound) if wl.outbound else "",
        }
        apps.append(
            Component(
                name=wl.name,
                kind="app",
                command=expand(app.command, wl_values, f"apps.{wl.service}.command"),
                probe=Probe("tcp", wl.address.port, timeout_s=60),
                address=f"http://{wl.address}",
            )
        )
    return apps


def _envoys(
    mesh: mview.MeshView, state: StateDir, server_names: tuple[str, ...], log_level: str
) -> list[Component]:
    """One Envoy per sidecar and gateway, its bootstrap written to ``<state>/work/envoy/``."""
    envoys: list[Component] = []
    for node in mesh.envoys:
        bootstrap = mview.write_bootstrap(mesh, node, state.work / "envoy")
        after = (CONTROL, *server_names, *((node.workload,) if node.workload else ()))
        if node.kind != "sidecar":  # gateways come last: every sidecar they route to is up
            after = (*after, *(e.name for e in envoys if e.kind == "sidecar"))
        envoys.append(
            Component(
                name=node.name if node.kind != "sidecar" else f"{node.name}-sidecar",
                kind="sidecar" if node.kind == "sidecar" else "gateway",
                command=mview.envoy_command(bootstrap, log_level),
                probe=Probe("envoy", node.admin.port, timeout_s=90),
                depends_on=after,
                address=node.address,
                metrics=f"{node.admin}/stats/prometheus",
            )
        )
    return envoys


def _dashboard(
    components: list[Component],
    control: Component,
    state: StateDir,
    opts: PlanOptions,
    port: int,
    info: dict[str, Any],
) -> Component:
    """The dashboard: reads Prometheus when the mesh runs one, else every component's metrics.

    Envoys are scraped for ``server.live`` only (their health), not their whole stats; the apps, which
    have no metrics, are probed as the runner probes them. Its access logs: the authz decision log (the
    authz server's output) and the telemetry server's JSON access log.
    """
    args = ["--control", f"http://{control.metrics.rsplit('/', 1)[0]}"]
    if "prometheus" in info:
        args += ["--prometheus", info["prometheus"]]
    else:
        for c in components:
            if c.metrics:
                live = "?filter=server.live" if c.kind in ("sidecar", "gateway") else ""
                args += ["--scrape", f"{c.name}:{c.kind}=http://{c.metrics}{live}"]
    for c in components:  # the apps have no metrics: their readiness probe tells their health
        if not c.metrics and c.probe.kind in ("tcp", "http"):
            url = f"tcp://127.0.0.1:{c.probe.port}"
            if c.probe.kind == "http":
                url = f"http://127.0.0.1:{c.probe.port}{c.probe.path}"
            args += ["--probe", f"{c.name}:{c.kind}={url}"]
    host = "0.0.0.0" if opts.public_ingress else "127.0.0.1"
    return Component(
        name="dashboard",
        kind="dashboard",
        command=_envoykit(
            opts.python,
            "dashboard",
            *args,
            "--access-log",
            str(state.log_path("authz")),
            *(
                ["--access-log", str(state.logs / ACCESS_LOG)]
                if any(c.name == "telemetry" for c in components)
                else []
            ),
            "--address",
            f"{host}:{port}",
        ),
        probe=Probe("http", port, "/healthz", timeout_s=60),
        depends_on=tuple(c.name for c in components),
        address=f"http://127.0.0.1:{port}",
    )


def plan_mesh(mesh_path: Path, state: StateDir, opts: PlanOptions | None = None) -> Plan:
    """Plan ``mesh_path``: load and validate it, write the Envoy bootstraps, list every process.

    Args:
        mesh_path: mesh.yaml.
        state: where generated files go (``work/``); must be prepared.
        opts: see :class:`PlanOptions`.

    Wasm modules mesh.yaml names are built first when missing (see :mod:`envoykit.mesh.wasm`).

    Raises:
        ConfigError: mesh.yaml or the run config is invalid, a service has no command, or a Wasm
            module cannot be built.
    """
    opts = opts or PlanOptions()
    mesh_path = mesh_path.absolute()
    rc_path = (opts.run_config or mesh_path.parent / "apps" / "run.yaml").absolute()
    rc = load_run_config(rc_path) if rc_path.exists() else RunConfig()
    ports = FreePorts() if opts.free_ports else None
    mesh = mview.load(
        mesh_path, state, free_ports=ports, public_ingress=opts.public_ingress, build_wasm=opts.build_wasm
    )
    values = {"python": opts.python, "dir": str(rc_path.parent), "mesh_dir": str(mesh_path.parent)}

    cp_metrics = _port(rc.control_plane.metrics_port, ports)
    control = Component(
        name=CONTROL,
        kind="control-plane",
        command=_envoykit(
            opts.python,
            *mview.serve_args(mesh, state.logs / ACCESS_LOG if mesh.access_log is not None else None),
            "--metrics-port",
            str(cp_metrics),
            *expand(rc.control_plane.args, values, "control_plane.args"),
        ),
        probe=Probe("grpc", mesh.xds.port, timeout_s=60),
        address=f"grpc://{mesh.xds}",
        metrics=f"127.0.0.1:{cp_metrics}/metrics",
    )
    servers: list[Component] = []
    used = mesh.used_servers
    if "authz" in used:
        servers.append(_server("authz", "authz", mesh.authz, rc.servers.authz, values, ports))
        _check_gate_policy_dir(mesh.model, mesh.path, _arg_value(servers, "authz", "--policy-dir"), rc_path)
        _publish_gate(mesh.model, mesh.path, servers[-1])
        _share_decision_log(mesh.model, mesh.path, servers[-1], rc_path)
    if "ratelimit" in used:
        servers.append(_server("ratelimit", "ratelimit", mesh.ratelimit, rc.servers.ratelimit, values, ports))
    if mesh.access_log is not None:
        # JSON access logs for `envoykit logs access`; Envoy's own access-log counters beside ours
        extra: tuple[str, ...] = ("--access-log", str(state.logs / ACCESS_LOG))
        extra += tuple(arg for e in mesh.envoys for arg in ("--envoy-admin", f"http://{e.admin}"))
        servers.append(
            _server("telemetry", "telemetry", mesh.access_log, rc.servers.telemetry, values, ports, extra)
        )
    if "telemetry" in used:
        servers.append(
            _server(
                "extproc-telemetry", "extproc", mesh.telemetry, rc.servers.extproc_telemetry, values, ports
            )
        )
    for pname, paddr in mesh.processors.items():
        if pname in used:
            run = rc.servers.processors.get(pname)
            if run is None:
                raise ConfigError(
                    f"no entry for processor {pname!r}", file=str(rc_path), field="servers.processors"
                )
            servers.append(_server(f"processor-{pname}", "extproc", paddr, run, values, ports))

    apps = _apps(mesh, rc, rc_path, values)
    envoys = _envoys(mesh, state, tuple(s.name for s in servers), opts.envoy_log_level)
    components = [control, *servers, *apps, *envoys]
    info: dict[str, Any] = {
        "mesh_file": str(mesh.path),
        "control_state_dir": mesh.model.control_plane.state_dir,
        "control_status": str(mview.control_state_dir(mesh) / "control-status.json"),
        "nodes": {e.name: {"admin": f"http://{n.admin}"} for e, n in zip(envoys, mesh.envoys, strict=True)},
        "servers": {s.name: {"address": s.address, "metrics": f"http://{s.metrics}"} for s in servers},
    }
    metrics_urls = {s.name: f"http://{s.metrics}" for s in servers if s.metrics}
    token_key = expand([rc.demo.token_key], values, "demo.token_key")[0] if rc.demo.token_key else ""
    info["demo"] = demo_facts(
        mesh,
        _arg_value(servers, "ratelimit", "--config-dir"),
        metrics_urls,
        Path(token_key) if token_key else None,
    )
    prom = prometheus_binary() if opts.prometheus else None
    if prom is not None:
        port = _port(opts.prometheus_port, ports)
        components.append(
            prometheus_component(prom, components, state.work, port, tuple(c.name for c in components))
        )
        info["prometheus"] = f"http://127.0.0.1:{port}"
    if opts.dashboard:
        dash = _dashboard(components, control, state, opts, _port(opts.dashboard_port, ports), info)
        components.append(dash)
        info["dashboard"] = dash.address
    return Plan(components=components, ingress=mesh.ingress, info=info)
