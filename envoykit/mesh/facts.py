"""Facts about a planned mesh that ``envoykit demo`` and the tests check against.

They are read from the model (canary weights, the Wasm header) and from the rate-limit config (the
per-client limit), so the demo checks what the configuration says rather than numbers written twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from envoykit.mesh.controlplane import MeshView

CLIENT_KEY = "client_id"


def canary_weights(view: MeshView, service: str) -> dict[str, int]:
    """Version → weight (%) of the weighted route to ``service`` on the sidecars (``gateways: [mesh]``).

    Subsets are mapped to versions by their DestinationRule labels (``version``), else by name.
    """
    model = view.model
    versions: dict[str, str] = {}
    rule = model.destination_rule(service)
    if rule is not None:
        versions = {s.name: s.labels.get("version", s.name) for s in rule.subsets}
    for vs in model.virtual_services:
        if "mesh" not in vs.gateways or model.service(vs.hosts[0]) is not model.service(service):
            continue
        for route in vs.http:
            if len(route.route) > 1:
                return {
                    versions.get(d.destination.subset or "", d.destination.subset or "?"): d.weight or 0
                    for d in route.route
                }
    return {}


def wasm_header(view: MeshView) -> tuple[str, str]:
    """(name, value) of the first response header the Wasm plugins add; ``("", "")`` without one.

    The demo filter (examples/wasm/c/add_header.c) takes one ``name: value`` line per header as its
    configuration.
    """
    for plugin in view.model.extensions.wasm:
        conf = plugin.configuration
        for line in conf.splitlines() if isinstance(conf, str) else []:
            name, sep, value = line.partition(":")
            if sep and name.strip():
                return name.strip().lower(), value.strip()
    return "", ""


def per_client_limit(config_dir: Path) -> int:
    """``requests_per_unit`` of the key-only ``client_id`` descriptor in ``config_dir`` (0: none)."""
    for path in sorted(config_dir.glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for d in doc.get("descriptors", []):
            if d.get("key") == CLIENT_KEY and "value" not in d and "rate_limit" in d:
                return int(d["rate_limit"]["requests_per_unit"])
    return 0


def demo_facts(view: MeshView, ratelimit_dir: Path | None, metrics: dict[str, str]) -> dict[str, Any]:
    """Everything :class:`envoykit.mesh.demo.DemoTarget` reads, as JSON values.

    Args:
        metrics: server name (``authz``, ``ratelimit``, ``telemetry``) → its ``/metrics`` URL.
    """
    backend_inbound = [
        str(wl.sidecar.inbound)
        for svc, wl in view.model.workloads()
        if svc.name == "backend" and wl.sidecar is not None
    ]
    header, value = wasm_header(view)
    key = view.path.absolute().parent / "demo-issuer" / "key.pem"
    from envoykit.mesh.controlplane import control_state_dir

    egress = next((g for g in view.model.gateways if g.kind == "egress"), None)
    return {
        "egress": str(egress.address) if egress else "",
        "egress_allowed": [a.host for a in egress.allow] if egress else [],
        "token_key": str(key) if key.exists() else "",
        "ca_state_dir": str(control_state_dir(view)),
        "trust_domain": view.model.trust_domain,
        "telemetry_metrics": metrics.get("telemetry", ""),
        "authz_metrics": metrics.get("authz", ""),
        "ratelimit_metrics": metrics.get("ratelimit", ""),
        "backend_inbound": backend_inbound,
        "canary_weights": canary_weights(view, "backend"),
        "wasm_header": header,
        "wasm_value": value,
        "ratelimit_per_client": per_client_limit(ratelimit_dir) if ratelimit_dir else 0,
    }
