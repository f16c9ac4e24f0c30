"""Facts about a planned mesh that ``envoykit demo`` and the tests check against.

Everything is read from the configuration, nothing about the demo is written here: the canary service
and its weights, the Wasm header and the per-client rate-limit descriptor from the mesh model, the
limit from the rate-limit config, the token key from the run config (``demo.token_key``). So the demo
checks what the configuration says rather than names and numbers written twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from envoykit.mesh.view import MeshView, control_state_dir


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


def canary_service(view: MeshView) -> str:
    """The service a sidecar route (``gateways: [mesh]``) splits by weight between subsets; ``""`` if none."""
    model = view.model
    for vs in model.virtual_services:
        if "mesh" not in vs.gateways:
            continue
        for route in vs.http:
            if len(route.route) > 1:
                svc = model.service(route.route[0].destination.host)
                if svc is not None:
                    return svc.name
    return ""


def client_descriptor_key(view: MeshView) -> str:
    """The descriptor key of the first ``request_headers`` rate-limit action in the model (a per-client
    limit keyed by a header's value); ``""`` without one."""
    model = view.model
    limits = [rl for vs in model.virtual_services for route in vs.http for rl in route.rate_limits]
    proxies = [svc.extensions for svc in model.services] + [gw.extensions for gw in model.gateways]
    limits += [rl for ext in proxies if ext.ratelimit is not None for rl in ext.ratelimit.rate_limits]
    for rl in limits:
        for action in rl.actions:
            if action.request_headers is not None:
                return action.request_headers.descriptor_key
    return ""


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


def per_client_limit(config_dir: Path, key: str) -> int:
    """``requests_per_unit`` of the key-only descriptor ``key`` in ``config_dir`` (0: none)."""
    if not key:
        return 0
    for path in sorted(config_dir.glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for d in doc.get("descriptors", []):
            if d.get("key") == key and "value" not in d and "rate_limit" in d:
                return int(d["rate_limit"]["requests_per_unit"])
    return 0


def demo_facts(
    view: MeshView, ratelimit_dir: Path | None, metrics: dict[str, str], token_key: Path | None = None
) -> dict[str, Any]:
    """Everything :class:`envoykit.mesh.demo.DemoTarget` reads, as JSON values.

    Args:
        ratelimit_dir: the rate-limit server's config directory (from the run config), if it runs.
        metrics: server name (``authz``, ``ratelimit``, ``telemetry``) → its ``/metrics`` URL.
        token_key: the private key the demo signs its JWT with (run config ``demo.token_key``).
    """
    canary = canary_service(view)
    canary_inbound = [
        str(wl.sidecar.inbound)
        for svc, wl in view.model.workloads()
        if svc.name == canary and wl.sidecar is not None
    ]
    header, value = wasm_header(view)
    egress = next((g for g in view.model.gateways if g.kind == "egress"), None)
    return {
        "egress": str(egress.address) if egress else "",
        "egress_allowed": [a.host for a in egress.allow] if egress else [],
        "token_key": str(token_key) if token_key is not None and token_key.exists() else "",
        "ca_state_dir": str(control_state_dir(view)),
        "trust_domain": view.model.trust_domain,
        "telemetry_metrics": metrics.get("telemetry", ""),
        "authz_metrics": metrics.get("authz", ""),
        "ratelimit_metrics": metrics.get("ratelimit", ""),
        "backend_inbound": canary_inbound,
        "canary_weights": canary_weights(view, canary) if canary else {},
        "wasm_header": header,
        "wasm_value": value,
        "ratelimit_per_client": per_client_limit(ratelimit_dir, client_descriptor_key(view))
        if ratelimit_dir
        else 0,
    }
