"""``envoykit k8s render MESH -o DIR``: the mesh as Kubernetes manifests, one file per component.

Files (``kubectl apply -f DIR`` applies them in name order)::

    00-namespaces.yaml         the namespaces of envoykit and of the mesh's services
    05-wasm.yaml               the Wasm modules mesh.yaml names (ConfigMap binaryData)
    10-control-plane.yaml      ServiceAccount, RBAC (EndpointSlices, Services, Pods), the mesh ConfigMap,
                               the CA and node-token key Secret, Deployment, Service (xDS+SDS, webhook),
                               PodDisruptionBudget, the MutatingWebhookConfiguration
    20-<server>.yaml           authz, ratelimit, telemetry, processor-<name>: see servers.py
    25-redis.yaml              Redis for shared rate-limit counters (unless an external one is named)
    30-gateway-<name>.yaml     an ingress or egress gateway: bootstrap Secret, Deployment, Service, PDB
    40-service-<name>.yaml     a mesh service: its Service, and per workload a bootstrap Secret and a
                               Deployment with the app and its injected sidecar

The CA and the node-token key come from ``--state-dir`` (created there when missing), so the Secrets
in DIR are credentials: keep DIR as secret as the state directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from google.protobuf.json_format import MessageToJson

from envoykit.control.model.loader import load_mesh
from envoykit.control.model.mesh import Mesh
from envoykit.control.model.nodes import NodeInfo, mesh_nodes
from envoykit.control.model.semantics import check_mesh
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.translate.bootstrap import bootstrap
from envoykit.control.xds.tokens import NodeTokens
from envoykit.core import ConfigError
from envoykit.k8s import names
from envoykit.k8s import objects as o
from envoykit.k8s.controlplane import control_plane_manifests
from envoykit.k8s.kmesh import k8s_mesh, with_gate_url, xds_address
from envoykit.k8s.servers import ServerSpec, redis_manifests, server_manifests
from envoykit.k8s.sidecar import SidecarOptions, envoy_container, envoy_volumes, sidecar_patch

Obj = dict[str, Any]


#: The authz server's metrics port when the run config names none (its /gate too).
AUTHZ_METRICS_PORT = 9101


@dataclass
class RenderOptions:
    """Choices of ``envoykit k8s render``.

    Attributes:
        namespace: where envoykit's components run (default: the mesh's ``namespace``).
        images: container images and pull policy.
        control_replicas, server_replicas, gateway_replicas: Deployment replica counts.
        cluster_domain: the cluster's DNS domain.
        state_dir: holds the CA and the node-token key (default: the mesh's ``control_plane.state_dir``).
        run_config: how apps and servers run (default ``apps/run.yaml`` beside mesh.yaml).
        image_mesh_dir: where the mesh folder is inside the envoykit image (the demo: ``/app/examples``).
        app_images: service → image for apps not run from the envoykit image (its own entrypoint).
        redis_url, redis_cluster_url: an external Redis / Redis Cluster for the rate-limit counters.
        ingress_service_type: the ingress gateway Service's type.
    """

    namespace: str | None = None
    images: names.Images = field(default_factory=names.Images)
    control_replicas: int = 2
    server_replicas: int = 2
    gateway_replicas: int = 2
    cluster_domain: str = "cluster.local"
    state_dir: Path | None = None
    run_config: Path | None = None
    image_mesh_dir: str = "/app/examples"
    app_images: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None
    redis_cluster_url: str | None = None
    ingress_service_type: str = "LoadBalancer"


def _bootstrap_secret(info: NodeInfo, mesh: Mesh, ns: str, tokens: NodeTokens, opts: RenderOptions) -> Obj:
    boot = bootstrap(info, xds_address(mesh, ns, opts.cluster_domain), tokens.token_for(info.id))
    text = MessageToJson(boot, preserving_proto_field_name=True, indent=1)
    return o.secret(
        names.bootstrap_secret(info.name), info.namespace, "bootstrap", {"bootstrap.json": text.encode()}
    )


def _servers(
    mesh: Mesh, ns: str, opts: RenderOptions, run: Any, values: dict[str, str]
) -> dict[str, list[Obj]]:
    from envoykit.mesh.runconfig import expand

    used: set[str] = set()
    for e in [s.extensions for s in mesh.services] + [g.extensions for g in mesh.gateways]:
        used |= {"authz"} if e.authz else set()
        used |= {"ratelimit"} if e.ratelimit else set()
        used |= {"telemetry"} if e.telemetry else set()
        used |= set(e.processors)
    ext = mesh.extensions
    specs: list[ServerSpec] = []
    if "authz" in used:
        a = run.servers.authz
        specs.append(
            ServerSpec(
                "authz",
                "authz",
                ext.authz.address,
                expand(a.args, values, "authz"),
                a.metrics_port or AUTHZ_METRICS_PORT,
            )
        )
    files: dict[str, list[Obj]] = {}
    if "ratelimit" in used:
        r = run.servers.ratelimit
        spec = ServerSpec(
            "ratelimit",
            "ratelimit",
            ext.ratelimit.address,
            expand(r.args, values, "ratelimit"),
            r.metrics_port or 9102,
        )
        if opts.redis_cluster_url:
            spec.extra_args = ["--redis-cluster-url", opts.redis_cluster_url]
        else:
            url = (
                opts.redis_url or f"redis://{names.service_dns(names.REDIS, ns, opts.cluster_domain)}:6379/0"
            )
            spec.extra_args = ["--redis-url", url]
            if not opts.redis_url:
                files["25-redis.yaml"] = redis_manifests(ns, opts.images)
        specs.append(spec)
    access_log = getattr(ext, "access_log", None)
    extproc_run = getattr(run.servers, "extproc_telemetry", None)
    if access_log is not None and access_log.enabled:  # Envoys stream access logs to it
        a = run.servers.telemetry if extproc_run is not None else None
        specs.append(
            ServerSpec(
                "access-log",
                "telemetry",
                access_log.address,
                [*expand(a.args, values, "telemetry"), "--access-log", "-"] if a else ["--access-log", "-"],
                (a.metrics_port if a else 0) or 9104,
            )
        )
    if "telemetry" in used:
        t = extproc_run or run.servers.telemetry
        specs.append(
            ServerSpec(
                "telemetry",
                "extproc",
                ext.telemetry.address,
                expand(t.args, values, "telemetry"),
                t.metrics_port or 9103,
            )
        )
    for p in ext.processors:
        if p.name in used:
            pr = run.servers.processors.get(p.name)
            if pr is None:
                raise ConfigError(f"no run config entry for processor {p.name!r}", field="servers.processors")
            specs.append(
                ServerSpec(
                    f"processor-{p.name}",
                    "extproc",
                    p.address,
                    expand(pr.args, values, p.name),
                    pr.metrics_port or 9110,
                )
            )
    for spec in specs:
        spec.replicas = opts.server_replicas
        files[f"20-{spec.name}.yaml"] = server_manifests(spec, ns, opts.images)
    return files


def _gateway(
    mesh: Mesh, info: NodeInfo, ns: str, tokens: NodeTokens, opts: RenderOptions, base: Path
) -> list[Obj]:
    gw = info.gateway
    assert gw is not None
    gns = info.namespace
    docs: list[Obj] = [
        o.service_account(info.service_account, gns, gw.kind),
        _bootstrap_secret(info, mesh, ns, tokens, opts),
    ]
    container = envoy_container(
        gw.kind,
        gw.address.port,
        SidecarOptions(images=opts.images),
        wasm=bool(gw.extensions.wasm),
        sidecar=False,
    )
    volumes = envoy_volumes(gw.name, wasm=bool(gw.extensions.wasm))
    if gw.tls is not None:
        cert, key = (
            Path(f) if Path(f).is_absolute() else base / f for f in (gw.tls.cert_file, gw.tls.key_file)
        )
        docs.append(
            o.secret(
                f"{gw.name}-tls", gns, gw.kind, {"tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}
            )
        )
        volumes.append({"name": "tls", "secret": {"secretName": f"{gw.name}-tls", "defaultMode": 0o440}})
        container["volumeMounts"].append(
            {"name": "tls", "mountPath": f"{names.TLS_DIR}/{gw.name}", "readOnly": True}
        )
    selector = {names.COMPONENT_LABEL: gw.kind, "app": gw.name, names.POD_INJECT_LABEL: "false"}
    pod = {
        "serviceAccountName": info.service_account,
        "containers": [container],
        "volumes": volumes,
        "securityContext": {"fsGroup": 1337},
    }
    kind = opts.ingress_service_type if gw.kind == "ingress" else "ClusterIP"
    docs += [
        o.deployment(gw.name, gns, gw.kind, selector, pod, replicas=opts.gateway_replicas),
        o.service(
            gw.name,
            gns,
            gw.kind,
            selector,
            [o.port("http" if gw.tls is None else "https", gw.address.port, names.MESH_PORT_NAME)],
            type_=kind,
        ),
        o.pdb(gw.name, gns, gw.kind, selector, opts.gateway_replicas),
    ]
    return docs


def _app_container(svc: Any, wl: Any, run: Any, values: dict[str, str], opts: RenderOptions) -> Obj:
    from envoykit.mesh.runconfig import expand

    c: Obj = {"name": "app", "imagePullPolicy": opts.images.pull_policy}
    image = opts.app_images.get(svc.name) or opts.app_images.get("*")
    app = run.apps.get(svc.name)
    if image is not None:
        c["image"] = image
    elif app is not None:
        outbound = f"127.0.0.1:{wl.sidecar.outbound.port}" if wl.sidecar else ""
        wl_values = {
            **values,
            "port": str(wl.address.port),
            "host": "127.0.0.1",
            "version": wl.version,
            "workload": wl.name,
            "service": svc.name,
            "outbound": outbound,
        }
        c["image"] = opts.images.envoykit
        c["command"] = expand(app.command, wl_values, f"apps.{svc.name}.command")
    else:
        raise ConfigError(
            f"no image for service {svc.name!r}: pass --app-image {svc.name}=IMAGE (or add apps.{svc.name} to the run config)"
        )
    c["ports"] = [{"name": "app", "containerPort": wl.address.port, "protocol": "TCP"}]
    c["env"] = [{"name": "PORT", "value": str(wl.address.port)}]
    if wl.sidecar is None:  # mesh traffic enters the app directly
        c["ports"][0]["name"] = names.MESH_PORT_NAME
    c["resources"] = o.resources("100m", "64Mi", "256Mi")
    return c


def _service(
    mesh: Mesh, svc: Any, ns: str, tokens: NodeTokens, opts: RenderOptions, run: Any, values: dict[str, str]
) -> list[Obj]:
    sns = mesh.ns(svc)
    sa = mesh.service_account(svc)
    selector = {names.SERVICE_LABEL: svc.name}
    app_protocol = {"http": "http", "http2": "kubernetes.io/h2c", "grpc": "kubernetes.io/h2c", "tcp": None}[
        svc.protocol
    ]
    docs: list[Obj] = [
        o.service_account(sa, sns, "workload"),
        o.service(
            svc.name,
            sns,
            "workload",
            selector,
            [o.port(svc.protocol, svc.port, names.MESH_PORT_NAME, app_protocol)],
        ),
    ]
    nodes = mesh_nodes(mesh)
    sopts = SidecarOptions(images=opts.images)
    for wl in svc.workloads:
        labels = {
            "app": svc.name,
            "version": wl.version,
            names.WORKLOAD_LABEL: wl.name,
            names.SERVICE_LABEL: svc.name,
            **wl.labels,
        }
        template: Obj = {
            "metadata": {"labels": labels},
            "spec": {"serviceAccountName": sa, "containers": [_app_container(svc, wl, run, values, opts)]},
        }
        if wl.sidecar is not None:
            docs.append(_bootstrap_secret(nodes[f"sidecar~{wl.name}"], mesh, ns, tokens, opts))
            template = jsonpatch.apply_patch(template, sidecar_patch(mesh, template, sopts))
        dep = o.deployment(wl.name, sns, "workload", {names.WORKLOAD_LABEL: wl.name}, template["spec"])
        dep["spec"]["template"]["metadata"] = {
            **template["metadata"],
            "labels": {**dep["spec"]["template"]["metadata"]["labels"], **template["metadata"]["labels"]},
        }
        docs.append(dep)
    return docs


def render_mesh(mesh_path: Path, opts: RenderOptions | None = None) -> dict[str, list[Obj]]:
    """Render the mesh of ``mesh_path``: file name → the objects of that file.

    Raises:
        ConfigError: mesh.yaml or the run config is invalid, the in-cluster mesh fails the semantic
            checks, a Wasm module or TLS file is missing, or an app has no image.
    """
    from envoykit.mesh.runconfig import RunConfig, load_run_config

    opts = opts or RenderOptions()
    loaded = load_mesh(mesh_path)
    mesh, base = loaded.mesh, loaded.base_dir
    ns = names.check_dns_label(opts.namespace or mesh.namespace, "namespace")
    kmesh = k8s_mesh(mesh, ns, opts.cluster_domain)
    problems = check_mesh(kmesh)
    if problems:
        raise ConfigError(f"{mesh_path}: the in-cluster mesh is invalid: {problems[0]}")
    rc_path = opts.run_config or base / "apps" / "run.yaml"
    run = load_run_config(rc_path) if rc_path.exists() else RunConfig()
    kmesh = with_gate_url(
        kmesh, ns, opts.cluster_domain, run.servers.authz.metrics_port or AUTHZ_METRICS_PORT
    )
    image_dir = opts.image_mesh_dir
    try:
        rc_rel = rc_path.absolute().parent.relative_to(base.absolute()).as_posix()
    except ValueError:
        rc_rel = "apps"
    local = {"python": "python", "dir": str(rc_path.absolute().parent), "mesh_dir": str(base.absolute())}
    in_image = {"python": "python", "dir": f"{image_dir}/{rc_rel}", "mesh_dir": image_dir}
    sd = opts.state_dir or Path(mesh.control_plane.state_dir)
    sd = sd if sd.is_absolute() else base / sd
    ca = CertificateAuthority(sd, mesh.trust_domain)
    tokens = NodeTokens(sd)

    namespaces = sorted({ns} | {kmesh.ns(s) for s in kmesh.services} | {kmesh.ns(g) for g in kmesh.gateways})
    files: dict[str, list[Obj]] = {"00-namespaces.yaml": [o.namespace(n) for n in namespaces]}
    if mesh.extensions.wasm:
        binary = {}
        for w in mesh.extensions.wasm:
            f = Path(w.file) if Path(w.file).is_absolute() else base / w.file
            if not f.exists():
                raise ConfigError(
                    f"{f}: Wasm module {w.name!r} missing; build it first (envoykit wasm build)"
                )
            binary[f.name] = f.read_bytes()
        wasm_objs = []
        for n in namespaces:  # every Envoy mounts it from its own namespace
            wasm_objs.append(o.config_map("envoykit-wasm", n, "wasm", {}, binary))
        files["05-wasm.yaml"] = wasm_objs
    files["10-control-plane.yaml"] = control_plane_manifests(kmesh, ns, ca, tokens, opts)
    files.update(_servers(mesh, ns, opts, run, local))
    nodes = mesh_nodes(kmesh)
    for info in nodes.values():
        if info.gateway is not None:
            files[f"30-gateway-{info.name}.yaml"] = _gateway(kmesh, info, ns, tokens, opts, base)
    for svc in kmesh.services:
        files[f"40-service-{svc.name}.yaml"] = _service(kmesh, svc, ns, tokens, opts, run, in_image)
    return files


def write_manifests(files: dict[str, list[Obj]], out: Path, command: str = "render") -> list[Path]:
    """Write each file's objects as a YAML stream under ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, docs in files.items():
        path = out / name
        header = f"# Generated by `envoykit k8s {command}`: do not edit by hand.\n"
        path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))
        written.append(path)
    return written
