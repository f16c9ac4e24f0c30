"""The control plane's manifests: ServiceAccount, discovery RBAC, the mesh ConfigMap, the CA Secret,
Deployment, Service, PodDisruptionBudget and the sidecar-injection MutatingWebhookConfiguration."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import yaml

from envoykit.control.model.mesh import Mesh
from envoykit.control.pki.ca import CertificateAuthority
from envoykit.control.xds.tokens import NodeTokens
from envoykit.k8s import names
from envoykit.k8s import objects as o

if TYPE_CHECKING:
    from envoykit.k8s.render import RenderOptions

Obj = dict[str, Any]
WEBHOOK_PORT = 15017
METRICS_PORT = 15014


def _ca_secret(ca: CertificateAuthority, tokens: NodeTokens, ns: str) -> tuple[Obj, list[Obj]]:
    """The Secret with the CA's files (``state.json``, ``gen-<n>/*.pem``) and the node-token key, and the
    volume items that lay them out as the CA expects under ``<state_dir>/ca``."""
    data: dict[str, bytes] = {}
    items: list[Obj] = []
    for f in sorted(p for p in ca.dir.rglob("*") if p.is_file()):
        rel = f.relative_to(ca.dir).as_posix()
        key = rel.replace("/", "__")
        data[key] = f.read_bytes()
        items.append({"key": key, "path": rel, "mode": 0o400})
    tokens.token_for("probe")  # creates the key when missing
    data["node-token.key"] = tokens.path.read_bytes()
    return o.secret("envoykit-ca", ns, "control-plane", data), items


def control_plane_manifests(
    kmesh: Mesh, ns: str, ca: CertificateAuthority, tokens: NodeTokens, opts: RenderOptions
) -> list[Obj]:
    """The control plane's objects (see render.py's ``10-control-plane.yaml``) for the in-cluster ``kmesh``."""
    sa = names.CONTROL
    docs: list[Obj] = [o.service_account(sa, ns, "control-plane")]
    rules = [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["services", "pods"], "verbs": ["get", "list", "watch"]},
    ]
    watched = sorted({kmesh.ns(s) for s in kmesh.services} | {kmesh.ns(g) for g in kmesh.gateways})
    for wns in watched:
        docs += [o.role("envoykit-discovery", wns, rules), o.role_binding("envoykit-discovery", wns, sa, ns)]
    mesh_yaml = yaml.safe_dump(kmesh.model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    docs.append(o.config_map("envoykit-mesh", ns, "control-plane", {"mesh.yaml": mesh_yaml}))
    ca_secret, items = _ca_secret(ca, tokens, ns)
    docs.append(ca_secret)
    xds = kmesh.control_plane.xds.port
    selector = {names.COMPONENT_LABEL: "control-plane", names.POD_INJECT_LABEL: "false"}
    container: Obj = {
        "name": "control-plane",
        "image": opts.images.envoykit,
        "imagePullPolicy": opts.images.pull_policy,
        "command": ["envoykit", "control", "serve", f"{names.MESH_DIR}/mesh.yaml"],
        "args": [
            "--address",
            f"0.0.0.0:{xds}",
            "--state-dir",
            names.STATE_DIR,
            "--metrics-port",
            str(METRICS_PORT),
            "--discovery",
            "kubernetes",
            "--webhook",
            f"0.0.0.0:{WEBHOOK_PORT}",
            "--webhook-dns",
            names.service_dns(names.CONTROL, ns, opts.cluster_domain),
            "--webhook-dns",
            f"{names.CONTROL}.{ns}.svc",
            "--sidecar-image",
            opts.images.envoykit,
        ],
        # the webhook's SPIFFE ID names the namespace it runs in
        "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "ports": [
            {"name": "grpc-xds", "containerPort": xds, "protocol": "TCP"},
            {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        **o.grpc_probes(xds),
        "resources": o.resources("500m", "256Mi", "1Gi"),
        "volumeMounts": [
            {"name": "state", "mountPath": names.STATE_DIR},
            {"name": "ca", "mountPath": f"{names.STATE_DIR}/ca", "readOnly": True},
            {
                "name": "node-token",
                "mountPath": f"{names.STATE_DIR}/node-token.key",
                "subPath": "node-token.key",
                "readOnly": True,
            },
            {"name": "mesh", "mountPath": names.MESH_DIR, "readOnly": True},
        ],
    }
    pod: Obj = {
        "serviceAccountName": sa,
        "containers": [container],
        "volumes": [
            {"name": "state", "emptyDir": {}},
            {"name": "ca", "secret": {"secretName": "envoykit-ca", "items": items, "defaultMode": 0o400}},
            {
                "name": "node-token",
                "secret": {
                    "secretName": "envoykit-ca",
                    "items": [{"key": "node-token.key", "path": "node-token.key", "mode": 0o400}],
                },
            },
            {"name": "mesh", "configMap": {"name": "envoykit-mesh"}},
        ],
    }
    if kmesh.extensions.wasm:  # envoy --mode validate of each change loads the modules
        pod["volumes"].append({"name": names.WASM_VOLUME, "configMap": {"name": "envoykit-wasm"}})
        container["volumeMounts"].append(
            {"name": names.WASM_VOLUME, "mountPath": names.WASM_DIR, "readOnly": True}
        )
    docs += [
        o.deployment(names.CONTROL, ns, "control-plane", selector, pod, replicas=opts.control_replicas),
        o.service(
            names.CONTROL,
            ns,
            "control-plane",
            selector,
            [o.port("grpc-xds", xds, "grpc-xds", "grpc"), o.port("https-webhook", 443, "https-webhook")],
        ),
        o.pdb(names.CONTROL, ns, "control-plane", selector, opts.control_replicas),
        webhook_config(ns, ca),
    ]
    return docs


def webhook_config(ns: str, ca: CertificateAuthority) -> Obj:
    """The MutatingWebhookConfiguration: pods in namespaces labelled ``envoykit-injection=enabled``
    (unless they opt out) and pods labelled ``sidecar.envoykit.io/inject=true`` elsewhere. A pod is
    never created without the webhook's answer (``failurePolicy: Fail``)."""
    bundle = base64.b64encode(ca.trust_bundle_pem()).decode()

    def hook(name: str, namespace_selector: Obj, object_selector: Obj) -> Obj:
        return {
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
            "clientConfig": {
                "service": {"name": names.CONTROL, "namespace": ns, "path": "/inject", "port": 443},
                "caBundle": bundle,
            },
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                    "scope": "Namespaced",
                }
            ],
            "namespaceSelector": namespace_selector,
            "objectSelector": object_selector,
        }

    ns_key, pod_key = names.NAMESPACE_INJECTION_LABEL, names.POD_INJECT_LABEL
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": o.meta(names.WEBHOOK, None, "control-plane"),
        "webhooks": [
            hook(
                "namespace.sidecar-injector.envoykit.io",
                {"matchLabels": {ns_key: "enabled"}},
                {"matchExpressions": [{"key": pod_key, "operator": "NotIn", "values": ["false"]}]},
            ),
            hook(
                "object.sidecar-injector.envoykit.io",
                {"matchExpressions": [{"key": ns_key, "operator": "DoesNotExist"}]},
                {"matchLabels": {pod_key: "true"}},
            ),
        ],
    }
