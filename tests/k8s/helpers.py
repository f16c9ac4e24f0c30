"""Shared by the k8s tests: the demo mesh copied with its Wasm module built, a generated mesh of N
services, and the offline schema check of Kubernetes objects (kubernetes-validate, strict)."""

from __future__ import annotations

import functools
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
# the library reads the (large) schema files on every call; they never change, so read each once
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[assignment]
    kubernetes_validate.utils.schema_contents
)

#: the oldest Kubernetes with native sidecars on by default (1.29) and the newest schemas shipped
VERSIONS = ("1.29.0", "1.37.0")


def demo_copy(tmp: Path) -> Path:
    """examples/ copied under ``tmp`` with add_header.wasm built; returns the copy's mesh.yaml."""
    from envoykit.control.model.loader import load_mesh
    from envoykit.mesh.wasm import ensure_wasm_modules

    shutil.copytree(REPO / "examples", tmp / "examples", ignore=shutil.ignore_patterns("*.wasm"))
    mesh = tmp / "examples" / "mesh.yaml"
    ensure_wasm_modules(load_mesh(mesh))
    return mesh


def generated_mesh(path: Path, services: int) -> Path:
    """A mesh of ``services`` services (every 10th with a v2 canary), an ingress gateway with authz, a
    rate limit and telemetry, and services with authz and telemetry on their sidecars."""
    port = iter(range(20000, 65000))

    def a() -> str:
        return f"127.0.0.1:{next(port)}"

    svcs: list[dict[str, Any]] = []
    routes = []
    for i in range(services):
        name = f"svc-{i:04d}"
        wls = [
            {
                "name": f"{name}-v1",
                "version": "v1",
                "address": a(),
                "sidecar": {"inbound": a(), "outbound": a(), "admin": a()},
            }
        ]
        if i % 10 == 0:
            wls.append(
                {
                    "name": f"{name}-v2",
                    "version": "v2",
                    "address": a(),
                    "sidecar": {"inbound": a(), "outbound": a(), "admin": a()},
                }
            )
        ext = {"authz": {}, "telemetry": True} if i % 2 == 0 else {}
        svcs.append({"name": name, "mtls": "STRICT", "workloads": wls, "extensions": ext})
        if i < 50:
            routes.append(
                {"match": [{"uri": {"prefix": f"/{name}/"}}], "route": [{"destination": {"host": name}}]}
            )
    mesh = {
        "mesh_id": "gen",
        "trust_domain": "gen.local",
        "namespace": "shop",
        "control_plane": {"xds": a(), "state_dir": "state"},
        "extensions": {
            "authz": {"address": a()},
            "ratelimit": {"address": a()},
            "telemetry": {"address": a()},
        },
        "services": svcs,
        "gateways": [
            {
                "name": "ingress",
                "kind": "ingress",
                "address": a(),
                "admin": a(),
                "extensions": {"authz": {}, "ratelimit": {}, "telemetry": True},
            }
        ],
        "virtual_services": [{"name": "ingress", "hosts": ["*"], "gateways": ["ingress"], "http": routes}],
    }
    path.write_text(yaml.safe_dump(mesh, sort_keys=False))
    return path


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Errors of ``obj`` against the strict schemas of every version in :data:`VERSIONS`."""
    errors = []
    for v in VERSIONS:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{v} {obj.get('kind')} {obj.get('metadata', {}).get('name')}: {exc.message}")
    return errors


class Traffic:
    """GET ``url`` in a loop on a thread until stopped: ``seen`` counts answers by their ``x-upstream``
    header, ``failures`` holds every non-200 answer and transport error. A context manager."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as c:
            while not self._stop.is_set():
                try:
                    r = c.get(self.url)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:120]}")
                    self.seen[r.headers.get("x-upstream", "?")] += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
