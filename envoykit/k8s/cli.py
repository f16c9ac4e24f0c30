"""``envoykit k8s render|inject|integrate``: the mesh on Kubernetes (see docs/kubernetes.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from envoykit.core.errors import ConfigError


@click.group()
def k8s() -> None:
    """Kubernetes: manifests for the mesh, sidecar injection, resources for Istio / Envoy Gateway."""


@k8s.command("render")
@click.argument("mesh", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--namespace", default=None, help="Namespace of envoykit's components (default: the mesh's).")
@click.option(
    "--image", default="envoykit:0.1.0", show_default=True, help="The envoykit image (compose/Dockerfile)."
)
@click.option("--redis-image", default="redis:7.2-alpine", show_default=True)
@click.option("--pull-policy", type=click.Choice(["IfNotPresent", "Always", "Never"]), default="IfNotPresent")
@click.option("--control-replicas", type=click.IntRange(1), default=2, show_default=True)
@click.option("--server-replicas", type=click.IntRange(1), default=2, show_default=True)
@click.option("--gateway-replicas", type=click.IntRange(1), default=2, show_default=True)
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path), default=None, help="CA and node-token key.")
@click.option("--run-config", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option(
    "--image-mesh-dir", default="/app/examples", show_default=True, help="The mesh folder in the image."
)
@click.option("--app-image", "app_images", multiple=True, help="SERVICE=IMAGE ('*' for every service).")
@click.option("--redis-url", default=None, help="An external Redis for rate-limit counters.")
@click.option("--redis-cluster-url", default=None, help="An external Redis Cluster (redis://node:port).")
@click.option(
    "--ingress-service-type",
    type=click.Choice(["LoadBalancer", "NodePort", "ClusterIP"]),
    default="LoadBalancer",
    show_default=True,
)
def render(
    mesh: Path,
    out: Path,
    namespace: str | None,
    image: str,
    redis_image: str,
    pull_policy: str,
    control_replicas: int,
    server_replicas: int,
    gateway_replicas: int,
    cluster_domain: str,
    state_dir: Path | None,
    run_config: Path | None,
    image_mesh_dir: str,
    app_images: tuple[str, ...],
    redis_url: str | None,
    redis_cluster_url: str | None,
    ingress_service_type: str,
) -> None:
    """Write Kubernetes manifests for MESH into a folder, one file per component; then
    `kubectl apply -f DIR`. The folder holds Secrets (the CA, node tokens): keep it private."""
    from envoykit.k8s.names import Images
    from envoykit.k8s.render import RenderOptions, render_mesh, write_manifests

    apps: dict[str, str] = {}
    for item in app_images:
        svc, sep, img = item.partition("=")
        if not sep or not svc or not img:
            raise click.BadParameter(f"{item!r} is not SERVICE=IMAGE", param_hint="--app-image")
        apps[svc] = img
    opts = RenderOptions(
        namespace=namespace,
        images=Images(envoykit=image, redis=redis_image, pull_policy=pull_policy),
        control_replicas=control_replicas,
        server_replicas=server_replicas,
        gateway_replicas=gateway_replicas,
        cluster_domain=cluster_domain,
        state_dir=state_dir,
        run_config=run_config,
        image_mesh_dir=image_mesh_dir,
        app_images=apps,
        redis_url=redis_url,
        redis_cluster_url=redis_cluster_url,
        ingress_service_type=ingress_service_type,
    )
    try:
        files = render_mesh(mesh, opts)
    except (ConfigError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    for path in write_manifests(files, out):
        click.echo(f"wrote {path} ({len(files[path.name])} objects)")
    click.echo(f"apply with: kubectl apply -f {out}")


@k8s.command("inject")
@click.option(
    "-f",
    "--filename",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Manifest file (YAML, several documents allowed); '-' reads stdin.",
)
@click.option(
    "--mesh",
    "mesh_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("examples/mesh.yaml"),
    show_default=True,
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--namespace", default=None, help="Namespace of envoykit's control plane (default: the mesh's)."
)
@click.option("--image", default="envoykit:0.1.0", show_default=True, help="The sidecar image.")
@click.option("--cluster-domain", default="cluster.local", show_default=True)
def inject(
    source: Path, mesh_path: Path, output: Path | None, namespace: str | None, image: str, cluster_domain: str
) -> None:
    """Add envoykit's sidecar to the pods and pod templates of a manifest (like istioctl kube-inject)."""
    from envoykit.control.model.loader import load_mesh
    from envoykit.k8s.inject import inject_documents
    from envoykit.k8s.kmesh import k8s_mesh
    from envoykit.k8s.names import Images
    from envoykit.k8s.sidecar import SidecarOptions

    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
        docs = list(yaml.safe_load_all(text))
        mesh = load_mesh(mesh_path).mesh
        kmesh = k8s_mesh(mesh, namespace or mesh.namespace, cluster_domain)
        out, report = inject_documents(
            kmesh, docs, SidecarOptions(images=Images(envoykit=image)), str(source)
        )
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source}: not YAML: {exc}") from exc
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    result = yaml.safe_dump_all([d for d in out if d is not None], sort_keys=False)
    if output is None:
        sys.stdout.write(result)
    else:
        output.write_text(result)
    for r in report:
        detail = f" as workload {r.workload}" if r.workload else ""
        click.echo(f"{r.kind} {r.name}: {r.action}{detail}", err=True)


@k8s.command("integrate")
@click.argument("target", type=click.Choice(["istio", "envoy-gateway"]))
@click.option(
    "--mesh",
    "mesh_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("examples/mesh.yaml"),
    show_default=True,
    help="Which servers and settings.",
)
@click.option("-o", "--output", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--namespace", default=None, help="Where envoykit's servers run (default: the mesh's).")
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option("--istio-namespace", default="istio-system", show_default=True)
@click.option("--gateway", default="eg", show_default=True, help="Envoy Gateway: the Gateway to attach to.")
@click.option("--gateway-namespace", default="default", show_default=True)
@click.option(
    "--gateway-listener",
    default="http",
    show_default=True,
    help="Envoy Gateway: the Gateway's HTTP listener the rate-limit patch goes into.",
)
def integrate(
    target: str,
    mesh_path: Path,
    out: Path,
    namespace: str | None,
    cluster_domain: str,
    istio_namespace: str,
    gateway: str,
    gateway_namespace: str,
    gateway_listener: str,
) -> None:
    """Write the resources that wire envoykit's servers into an existing Istio or Envoy Gateway."""
    from envoykit.control.model.loader import load_mesh
    from envoykit.k8s import integrate as ig
    from envoykit.k8s.render import write_manifests

    try:
        mesh = load_mesh(mesh_path).mesh
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ns = namespace or mesh.namespace
    if target == "istio":
        files = ig.istio(mesh, ns, cluster_domain, istio_namespace)
    else:
        files = ig.envoy_gateway(mesh, ns, gateway, gateway_namespace, gateway_listener, cluster_domain)
    for path in write_manifests(files, out, f"integrate {target}"):
        click.echo(f"wrote {path}")
