"""The control plane's commands: ``envoykit control serve|nodes|status``, ``envoykit validate``,
``envoykit bootstrap`` and ``envoykit envoy inject``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from envoykit.core.errors import ConfigError
from envoykit.core.output import emit, error_doc, output_option


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def control() -> None:
    """The xDS control plane: serve a mesh.yaml to its Envoys over ADS (with SDS and the CA)."""


@control.command("serve")
@click.argument("mesh", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--address", default=None, help="gRPC host:port (default: control_plane.xds of the mesh).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help="CA, node tokens, status.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus /metrics on this port.")
@click.option("--envoy-validate/--no-envoy-validate", default=True, help="Check each change with envoy.")
@click.option("--no-tokens", is_flag=True, help="Do not check node tokens (development only).")
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--discovery",
    type=click.Choice(["model", "kubernetes"]),
    default="model",
    show_default=True,
    help="Where endpoints come from: the mesh's workloads, or EndpointSlices of the Kubernetes API.",
)
@click.option(
    "--kubeconfig", default=None, help="kubeconfig for --discovery kubernetes (default: in-cluster)."
)
@click.option("--webhook", default=None, help="Serve the sidecar-injection webhook (HTTPS) on host:port.")
@click.option("--webhook-dns", multiple=True, help="DNS name of the webhook's certificate (repeatable).")
@click.option("--sidecar-image", default=None, help="Image of the sidecar the webhook injects.")
@click.option(
    "--json-access-log",
    default=None,
    metavar="FILE",
    help="Where Envoys write JSON access-log lines when the mesh sets no extensions.access_log.json_log "
    "(stats transport).",
)
def serve(
    mesh: Path,
    address: str | None,
    state_dir: Path | None,
    metrics_port: int | None,
    envoy_validate: bool,
    no_tokens: bool,
    log_level: str,
    discovery: str,
    kubeconfig: str | None,
    webhook: str | None,
    webhook_dns: tuple[str, ...],
    sidecar_image: str | None,
    json_access_log: str | None,
) -> None:
    """Serve MESH over ADS until SIGTERM; reload it (keep-last-good) when it or its files change."""
    from envoykit.control.server import ControlPlane
    from envoykit.core.logs import configure_logging
    from envoykit.core.server import loop_termination_signal

    configure_logging(log_level)

    async def run() -> None:
        source: Any = None
        hook: Any = None
        extra: dict[str, Any] = {}
        if discovery == "kubernetes":  # Kubernetes lives in envoykit.k8s, imported only when asked for
            from envoykit.k8s.serve import api_client, start_discovery

            source = await asyncio.to_thread(start_discovery, mesh, api_client(kubeconfig))
            extra["endpoints"] = source
        # built inside the running loop: grpc.aio binds its server to the loop current at creation
        cp = ControlPlane(
            mesh,
            address=address,
            state_dir=state_dir,
            require_tokens=not no_tokens,
            envoy_validate=envoy_validate,
            metrics_port=metrics_port,
            json_access_log=json_access_log,
            **extra,
        )
        if source is not None:
            source.on_change = lambda: cp.update_endpoints(source.take_changed())  # endpoints only
        stopping = loop_termination_signal()
        await cp.start()
        if webhook is not None:
            from envoykit.k8s.serve import WebhookOptions, start_webhook

            hook = start_webhook(cp, WebhookOptions(webhook, list(webhook_dns), sidecar_image=sidecar_image))
        await stopping.wait()
        if hook is not None:
            hook.stop()
        if source is not None:
            source.stop()
        await cp.stop(2.0)

    try:
        asyncio.run(run())
    except ConfigError as exc:
        raise _fail(exc) from exc


@control.command("nodes")
@click.argument("mesh", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option()
def nodes(mesh: Path, output: str) -> None:
    """List the Envoys (node ids) of MESH with their identity."""
    from envoykit.control.model.loader import load_mesh
    from envoykit.control.model.nodes import mesh_nodes

    try:
        loaded = load_mesh(mesh)
    except ConfigError as exc:
        raise _fail(exc) from exc
    found = mesh_nodes(loaded.mesh)
    if output != "text":
        rows = [
            {
                "node_id": nid,
                "kind": n.kind,
                "name": n.name,
                "cluster": n.cluster,
                "app": n.app,
                "version": n.version,
                "namespace": n.namespace,
                "service_account": n.service_account,
                "principal": n.principal,
                "admin": str(n.admin),
            }
            for nid, n in found.items()
        ]
        emit(rows, output)
        return
    for nid, node in found.items():
        click.echo(f"{nid}\t{node.principal}\tadmin {node.admin}")


@control.command("status")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The control plane's state directory. Default: the running mesh's (as `envoykit status` "
    "finds it), else .envoykit.",
)
@output_option()
def status(state_dir: Path | None, output: str) -> None:
    """Print the running control plane's status (nodes, acknowledged versions, NACKs, refused changes)."""
    from envoykit.control.statedir import find_control_state
    from envoykit.control.status_view import load_status, status_lines

    found = find_control_state(state_dir)
    try:
        doc = load_status(found.status_file)
    except OSError as exc:
        where = "" if found.how == "--state-dir" else f"; looked in {found.path} ({found.how})"
        raise click.ClickException(
            f"{found.status_file}: {exc.strerror}: the control plane is not running{where}"
        ) from exc
    if output != "text":
        emit(doc, output)
        return
    for line in status_lines(doc):
        click.echo(line)


@click.command("validate")
@click.argument("mesh", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--node", "nodes_", multiple=True, help="Check these node ids with envoy (default: one per kind)."
)
@click.option("--no-envoy", is_flag=True, help="Skip layer 3 (envoy --mode validate).")
@output_option()
def validate(mesh: Path, nodes_: tuple[str, ...], no_envoy: bool, output: str) -> None:
    """Validate MESH: schema, references and semantics, and the generated Envoy config.

    With ``-o json|yaml``: one document ``{mesh, ok, layers, nodes, envoy_validated, error}`` where
    ``error`` is ``{file, line, field, message}``; the exit code is 1 when not ok, as in text mode.
    """
    from envoykit.control.model.loader import load_mesh
    from envoykit.control.translate.guard import check_not_empty
    from envoykit.control.translate.mtls import SpiffeMeshTls
    from envoykit.control.translate.translation import translate
    from envoykit.control.translate.validate import validate_translation
    from envoykit.core.logs import configure_logging

    configure_logging("warning")  # logs to stderr: stdout carries the result
    text = output == "text"
    doc: dict[str, Any] = {"mesh": str(mesh), "ok": False, "layers": [], "nodes": None}
    try:
        loaded = load_mesh(mesh)
        doc["layers"] += ["schema", "references"]
        if text:
            click.echo(f"{mesh}: schema ok, references ok")
        translation = translate(loaded.mesh, loaded.base_dir, SpiffeMeshTls())
        check_not_empty(translation, str(mesh))
        doc["layers"].append("translate")
        doc["nodes"] = sorted(translation.nodes)
        if text:
            click.echo(f"{mesh}: translated for {len(translation.nodes)} nodes")
        if not no_envoy:
            checked = validate_translation(translation, str(mesh), nodes_ or None)
            doc["layers"].append("envoy")
            doc["envoy_validated"] = list(checked)
            if text:
                click.echo(f"{mesh}: envoy --mode validate ok for {', '.join(checked)}")
        doc["ok"] = True
    except (ConfigError, ValueError) as exc:
        if text:
            raise _fail(exc) from exc
        doc["error"] = error_doc(exc)
        emit(doc, output)
        sys.exit(1)
    if not text:
        emit(doc, output)


@click.command("bootstrap")
@click.option("--node", "node", required=True, help="Node id (sidecar~backend-v1) or workload/gateway name.")
@click.argument("mesh", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--xds", default=None, help="Control plane host:port (default: control_plane.xds).")
@click.option(
    "--state-dir", type=click.Path(path_type=Path), default=None, help="Where the node-token key is."
)
@click.option("--no-token", is_flag=True, help="Leave the node token out.")
@click.option("--delta", is_flag=True, help="Incremental xDS (DELTA_GRPC) instead of State of the World.")
def bootstrap_cmd(
    node: str,
    mesh: Path,
    output: Path | None,
    xds: str | None,
    state_dir: Path | None,
    no_token: bool,
    delta: bool,
) -> None:
    """Write the bootstrap of one Envoy of MESH (JSON, which Envoy reads as YAML)."""
    from google.protobuf.json_format import MessageToJson

    from envoykit.control.model.loader import load_mesh
    from envoykit.control.model.nodes import mesh_nodes
    from envoykit.control.model.types import Address
    from envoykit.control.translate.bootstrap import bootstrap
    from envoykit.control.xds.tokens import NodeTokens

    try:
        loaded = load_mesh(mesh)
    except ConfigError as exc:
        raise _fail(exc) from exc
    all_nodes = mesh_nodes(loaded.mesh)
    info = all_nodes.get(node) or next((n for n in all_nodes.values() if n.name == node), None)
    if info is None:
        raise click.ClickException(f"no node {node!r} in {mesh}; known: {', '.join(all_nodes)}")
    sd = state_dir or Path(loaded.mesh.control_plane.state_dir)
    if not sd.is_absolute() and state_dir is None:
        sd = loaded.base_dir / sd
    token = None if no_token else NodeTokens(sd).token_for(info.id)
    address = Address.model_validate(xds) if xds else loaded.mesh.control_plane.xds
    boot = bootstrap(info, address, token, delta=delta)
    text = MessageToJson(boot, preserving_proto_field_name=True, indent=1)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")
        click.echo(f"wrote {output} for {info.id}", err=True)


bootstrap = bootstrap_cmd


@click.group()
def envoy() -> None:
    """Work with Envoy configs you run yourself."""


@envoy.command("inject")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--authz", default=None, help="ext_authz gRPC server host:port (IP or DNS name).")
@click.option("--ratelimit", default=None, help="Rate-limit service host:port (IP or DNS name).")
@click.option(
    "--ratelimit-domain",
    default=None,
    help="Domain sent to the rate-limit service [default: the replaced filter's, else envoykit].",
)
@click.option(
    "--descriptor",
    "descriptors",
    multiple=True,
    help="Rate-limit descriptor per virtual host: remote_address | header:NAME=KEY | generic:KEY=VALUE.",
)
@click.option("--extproc", default=None, help="Telemetry ext_proc server host:port (IP or DNS name).")
@click.option("--wasm", "wasm", multiple=True, help="FILE.wasm[:ROOT_ID[:CONFIGURATION]] (repeatable).")
@click.option(
    "--telemetry", default=None, help="Access-log telemetry server host:port (envoykit telemetry serve)."
)
@click.option(
    "--telemetry-transport",
    type=click.Choice(["stats", "grpc"]),
    default="stats",
    show_default=True,
    help="stats: Envoy counts Istio's metrics itself (run the server with --envoy-admin <this Envoy's "
    "admin>); grpc: every entry streams to the server.",
)
@click.option(
    "--json-log",
    default=None,
    metavar="FILE",
    help="With --telemetry-transport stats: Envoy writes each request's JSON access-log line here.",
)
@click.option(
    "--reporter",
    type=click.Choice(["destination", "source"]),
    default=None,
    help="Istio reporter of every listener [default: destination if INBOUND, else source].",
)
@click.option("--replace", is_flag=True, help="Re-point filters and clusters that are already there.")
@click.option("--workload", default=None, help="Workload name telemetry reports (node.metadata).")
@click.option("--app", default=None, help="App label [default: the workload name].")
@click.option("--version", "app_version", default=None, help="Version label.")
@click.option("--namespace", default=None, help="Namespace label.")
@click.option("--service-account", default=None, help="Service account (with --namespace: the principal).")
@click.option("--trust-domain", default="cluster.local", show_default=True, help="SPIFFE trust domain.")
@click.option("--mesh-id", default=None, help="Mesh id label.")
@click.option(
    "--gate",
    default=None,
    help="The native gate document the authz server publishes (its --gate-file, its /gate URL, or "
    "`envoykit authz compile --gate --document`): Envoy's RBAC decides what no Python rule applies to.",
)
@click.option("--no-gate", is_flag=True, help="With --gate: keep plain ext_authz (no native gate).")
@click.option(
    "--gate-decision-log",
    default=None,
    metavar="FILE",
    help="With --gate: Envoy appends a decision-log line (the authz server's --decision-log schema, "
    '"decided_by": "envoy") for each request the gate decides alone; may be the server\'s own file.',
)
@click.option(
    "--gate-decision-log-sample-allow",
    type=click.FloatRange(0.0, 1.0),
    default=1.0,
    show_default=True,
    help="Fraction of the gate's native allows written (denies: all).",
)
@click.option("--no-validate", is_flag=True, help="Do not run envoy --mode validate on input and result.")
def inject(
    config: Path,
    output: Path | None,
    authz: str | None,
    ratelimit: str | None,
    ratelimit_domain: str | None,
    descriptors: tuple[str, ...],
    extproc: str | None,
    wasm: tuple[str, ...],
    telemetry: str | None,
    telemetry_transport: str,
    json_log: str | None,
    reporter: str | None,
    replace: bool,
    workload: str | None,
    app: str | None,
    app_version: str | None,
    namespace: str | None,
    service_account: str | None,
    trust_domain: str,
    mesh_id: str | None,
    gate: str | None,
    no_gate: bool,
    gate_decision_log: str | None,
    gate_decision_log_sample_allow: float,
    no_validate: bool,
) -> None:
    """Add envoykit's filters and clusters to the static Envoy CONFIG and validate the result.

    Comments and key order of CONFIG are kept; the result is written only when Envoy accepts it.
    """
    from envoykit.control.translate.inject import InjectOptions
    from envoykit.control.translate.inject_file import inject_file

    opts = InjectOptions(
        authz=authz,
        ratelimit=ratelimit,
        ratelimit_domain=ratelimit_domain,
        descriptors=list(descriptors),
        extproc=extproc,
        wasm=list(wasm),
        telemetry=telemetry,
        telemetry_transport=telemetry_transport,
        json_log=json_log,
        reporter=reporter,
        replace=replace,
        workload=workload,
        app=app,
        version=app_version,
        namespace=namespace,
        service_account=service_account,
        trust_domain=trust_domain,
        mesh_id=mesh_id,
        gate=gate,
        native_gate=not no_gate,
        gate_decision_log=gate_decision_log,
        gate_decision_log_sample_allow=gate_decision_log_sample_allow,
    )
    try:
        done = inject_file(config, opts, output, validate=not no_validate)
    except (ConfigError, ValueError) as exc:
        raise _fail(exc) from exc
    for note in done.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {done.output}" + (" (envoy --mode validate: ok)" if done.validated else ""), err=True)
