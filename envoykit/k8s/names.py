"""Names the rendered manifests, the injector, the webhook and the discovery source agree on.

Labels and annotations follow Istio's pattern (``istio-injection=enabled`` on a namespace,
``sidecar.istio.io/inject`` on a pod) under envoykit's own prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: namespace label that turns injection on for every pod of the namespace
NAMESPACE_INJECTION_LABEL = "envoykit-injection"
#: pod label: "true" asks for a sidecar (outside labelled namespaces too), "false" opts out
POD_INJECT_LABEL = "sidecar.envoykit.io/inject"
#: pod annotation the injector writes; its presence means "already injected"
STATUS_ANNOTATION = "sidecar.envoykit.io/status"
#: pod label naming the mesh workload (node ``sidecar~<workload>``); read by discovery for subsets
WORKLOAD_LABEL = "envoykit.io/workload"
#: pod label naming the mesh service (the rendered Services select on it)
SERVICE_LABEL = "envoykit.io/service"
#: label Kubernetes puts on every EndpointSlice: the Service it belongs to
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
#: component label on everything ``envoykit k8s render`` writes
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF = {"app.kubernetes.io/part-of": "envoykit"}

SIDECAR_CONTAINER = "envoykit-proxy"
BOOTSTRAP_VOLUME = "envoykit-bootstrap"
BOOTSTRAP_DIR = "/etc/envoykit/bootstrap"
WASM_VOLUME = "envoykit-wasm"
WASM_DIR = "/etc/envoykit/wasm"
TLS_DIR = "/etc/envoykit/tls"
MESH_DIR = "/etc/envoykit/mesh"
STATE_DIR = "/var/lib/envoykit"
#: the named container port mesh traffic enters a pod on (sidecar inbound, or the app without one)
MESH_PORT_NAME = "mesh"

CONTROL = "envoykit-control"
WEBHOOK = "envoykit-sidecar-injector"
REDIS = "envoykit-redis"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class Images:
    """The container images: ``envoykit`` runs the control plane, the servers, every Envoy and the demo
    apps (compose/Dockerfile); ``redis`` holds shared rate-limit counters."""

    envoykit: str = "envoykit:0.1.0"
    redis: str = "redis:7.2-alpine"
    pull_policy: str = "IfNotPresent"


def bootstrap_secret(workload: str) -> str:
    """The Secret holding the bootstrap (with its node token) of the Envoy named ``workload``."""
    return f"envoykit-bootstrap-{workload}"


def service_dns(name: str, namespace: str, cluster_domain: str) -> str:
    """``<name>.<namespace>.svc.<cluster_domain>``: a Service's cluster DNS name."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


def check_dns_label(value: str, what: str) -> str:
    """Return ``value`` if it is a DNS-1123 label (Kubernetes names of Services, namespaces).

    Raises:
        ValueError: naming ``what`` and the rule broken.
    """
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
        )
    return value
