"""Builders of the Kubernetes objects envoykit renders, as plain dicts in the API's own field names
(core/v1, apps/v1, policy/v1, rbac.authorization.k8s.io/v1, admissionregistration.k8s.io/v1).

Every object carries ``app.kubernetes.io/part-of: envoykit`` and its component; the schemas they must
pass are Kubernetes' OpenAPI schemas (checked offline with ``kubernetes-validate`` in the tests).
"""

from __future__ import annotations

import base64
from typing import Any

from envoykit.k8s import names

Obj = dict[str, Any]


def meta(name: str, namespace: str | None, component: str, labels: dict[str, str] | None = None) -> Obj:
    """``metadata`` with envoykit's labels (``namespace`` None: a cluster-scoped object)."""
    m: Obj = {"name": name, "labels": {**names.PART_OF, names.COMPONENT_LABEL: component, **(labels or {})}}
    if namespace is not None:
        m["namespace"] = namespace
    return m


def namespace(name: str) -> Obj:
    """A Namespace."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(name, None, "namespace")}


def service_account(name: str, ns: str, component: str) -> Obj:
    """A ServiceAccount (its name is also the SPIFFE ``sa`` of envoykit's identities)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, ns, component)}


def config_map(
    name: str, ns: str, component: str, data: dict[str, str], binary: dict[str, bytes] | None = None
) -> Obj:
    """A ConfigMap; ``binary`` goes to ``binaryData`` (base64)."""
    obj: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(name, ns, component)}
    if data:
        obj["data"] = data
    if binary:
        obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return obj


def secret(name: str, ns: str, component: str, data: dict[str, bytes]) -> Obj:
    """An Opaque Secret (values base64 in ``data``)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(name, ns, component),
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def service(
    name: str,
    ns: str,
    component: str,
    selector: dict[str, str],
    ports: list[Obj],
    *,
    type_: str = "ClusterIP",
) -> Obj:
    """A Service selecting pods by ``selector``; ``ports`` are ServicePort dicts."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, ns, component),
        "spec": {"type": type_, "selector": selector, "ports": ports},
    }


def port(name: str, port_: int, target: int | str, app_protocol: str | None = None) -> Obj:
    """A ServicePort (TCP)."""
    p: Obj = {"name": name, "port": port_, "targetPort": target, "protocol": "TCP"}
    if app_protocol:
        p["appProtocol"] = app_protocol
    return p


def deployment(
    name: str,
    ns: str,
    component: str,
    pod_labels: dict[str, str],
    pod_spec: Obj,
    *,
    replicas: int = 1,
    annotations: dict[str, str] | None = None,
) -> Obj:
    """A Deployment of ``replicas`` pods labelled ``pod_labels`` (its selector) running ``pod_spec``;
    rolling updates never take a pod away before its replacement is ready (``maxUnavailable: 0``)."""
    template_meta: Obj = {"labels": {**names.PART_OF, names.COMPONENT_LABEL: component, **pod_labels}}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, ns, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def pdb(name: str, ns: str, component: str, selector: dict[str, str], replicas: int) -> Obj:
    """A PodDisruptionBudget: with several replicas at most one is evicted at a time; with one, none
    is kept (``maxUnavailable: 1``) so a node drain is never blocked forever."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name, ns, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
        if replicas <= 1
        else {"minAvailable": replicas - 1, "selector": {"matchLabels": selector}},
    }


def grpc_probes(port_: int) -> Obj:
    """Native gRPC readiness and liveness probes (``grpc.health.v1``, Kubernetes ≥ 1.24)."""
    return {
        "readinessProbe": {"grpc": {"port": port_}, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "grpc": {"port": port_},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
    }


def resources(cpu: str, memory: str, memory_limit: str) -> Obj:
    """Container ``resources``: CPU and memory requests, a memory limit (no CPU limit: no throttling)."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def role(name: str, ns: str, rules: list[Obj]) -> Obj:
    """A namespaced Role."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta(name, ns, "control-plane"),
        "rules": rules,
    }


def role_binding(name: str, ns: str, sa: str, sa_ns: str) -> Obj:
    """A RoleBinding of Role ``name`` in ``ns`` to ServiceAccount ``sa`` of ``sa_ns``."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta(name, ns, "control-plane"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
    }
