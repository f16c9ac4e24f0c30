"""What ``envoykit control serve`` adds on Kubernetes: the EndpointSlice discovery source and the
sidecar-injection webhook, wired to a :class:`~envoykit.control.server.ControlPlane`.

Start order: discovery lists every namespace first (a control plane that served before its first list
would push empty endpoints to every Envoy), then the control plane, then the webhook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoykit.core import ConfigError
from envoykit.k8s import names


def api_client(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes`` ApiClient: in-cluster (the pod's ServiceAccount) when running in a pod and no
    ``kubeconfig`` is given, else from ``kubeconfig`` (or ``$KUBECONFIG``, ``~/.kube/config``)."""
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig)


def start_discovery(mesh_path: Path, api: Any, timeout: float = 60.0) -> Any:
    """Start a :class:`~envoykit.k8s.discovery.KubernetesEndpoints` for the namespaces of the mesh's
    services and gateways and wait for its first list.

    Raises:
        ConfigError: the mesh is invalid, or the first list did not finish within ``timeout``.
    """
    from envoykit.control.model.loader import load_mesh
    from envoykit.k8s.discovery import KubernetesEndpoints

    mesh = load_mesh(mesh_path).mesh
    namespaces = sorted({mesh.ns(s) for s in mesh.services} | {mesh.ns(g) for g in mesh.gateways})
    source = KubernetesEndpoints(api, namespaces or [mesh.namespace])
    source.start()
    if not source.wait_synced(timeout):
        source.stop()
        errors = "; ".join(
            f"{s.resource}/{s.namespace}: {s.last_error}" for s in source.status if not s.synced
        )
        raise ConfigError(f"kubernetes discovery: no first list within {timeout:.0f}s ({errors})")
    return source


@dataclass
class WebhookOptions:
    """The webhook's listen address, the names the API server uses for it, its namespace and the
    sidecar image it injects."""

    address: str
    dns_names: list[str] = field(default_factory=list)
    namespace: str | None = None
    sidecar_image: str | None = None


def start_webhook(cp: Any, opts: WebhookOptions) -> Any:
    """Serve the injection webhook for control plane ``cp`` (its current mesh, its CA)."""
    from envoykit.control.pki.ca import CertificateAuthority
    from envoykit.k8s.sidecar import SidecarOptions
    from envoykit.k8s.webhook import InjectionWebhook

    mesh = cp.current.loaded.mesh
    host, _, port = opts.address.rpartition(":")
    namespace = opts.namespace or os.environ.get("POD_NAMESPACE") or mesh.namespace
    ca = CertificateAuthority(cp.state_dir, mesh.trust_domain)
    images = names.Images(envoykit=opts.sidecar_image) if opts.sidecar_image else names.Images()
    hook = InjectionWebhook(
        (host or "0.0.0.0", int(port)),
        lambda: cp.current.loaded.mesh,
        ca,
        namespace,
        opts.dns_names or [f"{names.CONTROL}.{namespace}.svc"],
        SidecarOptions(images=images),
        state_dir=cp.state_dir,
    )
    hook.start()
    return hook
