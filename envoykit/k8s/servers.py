"""Manifests of envoykit's extension servers (authz, ratelimit, telemetry, user processors) and Redis.

Each server is a Deployment of the envoykit image running ``envoykit <server> serve`` with the arguments
of the run config (``apps/run.yaml``, as ``envoykit up`` runs it), a Service, a PodDisruptionBudget and
native gRPC probes on its health service. An argument naming a local file or folder (policies,
rate-limit YAML) becomes a ConfigMap mounted as a folder: the kubelet swaps the ``..data`` symlink
on change and the servers reload it (keep-last-good), as they do on a local edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from envoykit.control.model.types import Address
from envoykit.core import ConfigError
from envoykit.k8s import names
from envoykit.k8s import objects as o

Obj = dict[str, Any]
_MAX_CONFIGMAP = 1 << 20  # the API server refuses larger objects (etcd's object size)


@dataclass
class ServerSpec:
    """One server to render: ``name`` (Service ``envoykit-<name>``), ``command`` (``authz``,
    ``ratelimit``, ``extproc``), listen ``address`` (its port is kept), local ``args``, metrics port."""

    name: str
    command: str
    address: Address
    args: list[str]
    metrics_port: int
    replicas: int = 2
    extra_args: list[str] = field(default_factory=list)


def _folder_map(path: Path) -> tuple[dict[str, str], list[Obj]]:
    """ConfigMap ``data`` and volume ``items`` for every file under ``path`` (keys flatten the folder)."""
    data: dict[str, str] = {}
    items: list[Obj] = []
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        key = rel.replace("/", "__")
        try:
            data[key] = f.read_text()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{f}: not text; a ConfigMap of a server's folder holds text files") from exc
        items.append({"key": key, "path": rel})
    if sum(len(v) for v in data.values()) > _MAX_CONFIGMAP:
        raise ConfigError(f"{path}: more than 1 MiB of files, too large for one ConfigMap")
    return data, items


def server_manifests(spec: ServerSpec, ns: str, images: names.Images) -> list[Obj]:
    """ConfigMaps for the local paths in ``spec.args``, the Deployment, Service and PDB of ``spec``."""
    name = f"envoykit-{spec.name}"
    docs: list[Obj] = []
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    args: list[str] = []
    for arg in spec.args:
        local = Path(arg)
        if not (local.is_absolute() and local.exists()):
            args.append(arg)
            continue
        cm = f"{name}-{local.stem.lower().replace('_', '-')}"
        data, items = _folder_map(local)
        docs.append(o.config_map(cm, ns, spec.name, data))
        folder = PurePosixPath("/etc/envoykit") / spec.name / local.name
        volumes.append({"name": cm, "configMap": {"name": cm, "items": items}})
        mounts.append({"name": cm, "mountPath": str(folder), "readOnly": True})
        args.append(str(folder if local.is_dir() else folder / local.name))
    port = spec.address.port
    container: Obj = {
        "name": spec.name,
        "image": images.envoykit,
        "imagePullPolicy": images.pull_policy,
        "command": ["envoykit", spec.command, "serve"],
        "args": [
            "--address",
            f"0.0.0.0:{port}",
            "--metrics-port",
            str(spec.metrics_port),
            *args,
            *spec.extra_args,
        ],
        "ports": [
            {"name": "grpc", "containerPort": port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"},
        ],
        **o.grpc_probes(port),
        "resources": o.resources("250m", "128Mi", "512Mi"),
        "volumeMounts": mounts,
    }
    selector = {names.COMPONENT_LABEL: spec.name, names.POD_INJECT_LABEL: "false"}
    pod: Obj = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 15,
    }
    docs += [
        o.deployment(
            name,
            ns,
            spec.name,
            selector,
            pod,
            replicas=spec.replicas,
            annotations={"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.metrics_port)},
        ),
        o.service(
            name,
            ns,
            spec.name,
            selector,
            # metrics too: the authz server's /gate is read there by the control plane
            [o.port("grpc", port, "grpc", "grpc"), o.port("metrics", spec.metrics_port, "metrics", "http")],
        ),
        o.pdb(name, ns, spec.name, selector, spec.replicas),
    ]
    return docs


def redis_manifests(ns: str, images: names.Images) -> list[Obj]:
    """A single Redis (no persistence: rate-limit counters live for seconds) and its Service."""
    selector = {names.COMPONENT_LABEL: "redis", names.POD_INJECT_LABEL: "false"}
    container: Obj = {
        "name": "redis",
        "image": images.redis,
        "imagePullPolicy": images.pull_policy,
        "args": ["--save", "", "--appendonly", "no", "--maxmemory-policy", "volatile-ttl"],
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 10},
        "resources": o.resources("100m", "64Mi", "256Mi"),
    }
    return [
        o.deployment(names.REDIS, ns, "redis", selector, {"containers": [container]}),
        o.service(names.REDIS, ns, "redis", selector, [o.port("redis", 6379, "redis")]),
    ]
