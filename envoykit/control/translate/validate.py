"""Layer 3 of mesh validation: the generated config checked by Envoy itself (``envoy --mode validate``).

For a node, its xDS resources are folded into one static bootstrap: RDS references become inline
``route_config``, EDS clusters become STATIC with their ``load_assignment``, and SDS references name
static secrets issued for the node by a throw-away CA (so certificate handling is validated too).
Envoy then parses every listener, filter (including loading Wasm modules), route and cluster.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from envoykit.control.model.nodes import NODE_KINDS
from envoykit.control.translate.accesslog import restore_stats_scopes
from envoykit.control.translate.bootstrap import bootstrap
from envoykit.control.translate.translation import NodeConfig, Translation
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE
from envoykit.core.envoy import EnvoyError, validate_envoy_config
from envoykit.core.errors import ConfigError

_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)


def _dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = restore_stats_scopes(MessageToDict(msg, preserving_proto_field_name=True))
    return out


def _strip_sds_sources(value: Any) -> Any:
    """Drop every ``sds_config`` so SDS references name static secrets instead of ADS ones."""
    if isinstance(value, dict):
        return {k: _strip_sds_sources(v) for k, v in value.items() if k != "sds_config"}
    if isinstance(value, list):
        return [_strip_sds_sources(v) for v in value]
    return value


def _static_secrets(cfg: NodeConfig) -> list[dict[str, Any]]:
    from envoykit.control.pki.ca import CertificateAuthority
    from envoykit.control.pki.sds import tls_certificate_secret, trust_bundle_secret

    td = cfg.node.principal.split("/")[2]
    with tempfile.TemporaryDirectory(prefix="envoykit-validate-ca-") as tmp:
        ca = CertificateAuthority(tmp, td)
        cert = ca.issue(cfg.node.principal)
        return [_dict(tls_certificate_secret(cert)), _dict(trust_bundle_secret(ca.trust_bundle_pem()))]


def static_bootstrap(cfg: NodeConfig) -> dict[str, Any]:
    """One node's resources as a static bootstrap (JSON form) that ``envoy --mode validate`` can check."""
    routes = {name: _dict(rc) for name, rc in cfg.resources(ROUTE).items()}
    endpoints = {name: _dict(cla) for name, cla in cfg.resources(ENDPOINT).items()}
    listeners = []
    for lst in cfg.resources(LISTENER).values():
        d = _dict(lst)
        for chain in d.get("filter_chains", []):
            for f in chain.get("filters", []):
                tc = f.get("typed_config", {})
                if tc.get("@type") == _HCM_TYPE and "rds" in tc:
                    name = tc.pop("rds")["route_config_name"]
                    tc["route_config"] = routes.get(name, {"name": name})
        listeners.append(d)
    clusters = []
    for c in cfg.resources(CLUSTER).values():
        d = _dict(c)
        if d.get("type") == "EDS":
            service = d.pop("eds_cluster_config", {}).get("service_name", d["name"])
            d["type"] = "STATIC"
            d["load_assignment"] = endpoints.get(service, {"cluster_name": d["name"]})
        clusters.append(d)
    out = _dict(bootstrap(cfg.node, cfg.node.admin))
    out.pop("dynamic_resources", None)
    out["static_resources"] = _strip_sds_sources(
        {"listeners": listeners, "clusters": clusters, "secrets": _static_secrets(cfg)}
    )
    return out


def nodes_to_validate(translation: Translation) -> list[str]:
    """One node id per kind present (sidecar, ingress, egress), the first of each in file order."""
    picked: dict[str, str] = {}
    for nid, cfg in translation.nodes.items():
        picked.setdefault(cfg.node.kind, nid)
    return [picked[k] for k in NODE_KINDS if k in picked]


def validate_translation(
    translation: Translation, file: str | None = None, node_ids: Iterable[str] | None = None
) -> list[str]:
    """Run ``envoy --mode validate`` on the config of ``node_ids`` (default: one node per kind).

    Returns:
        the node ids checked.

    Raises:
        ConfigError: Envoy refused a node's config (the message names the node and Envoy's reason).
    """
    ids = list(node_ids) if node_ids is not None else nodes_to_validate(translation)
    for nid in ids:
        cfg = translation.nodes.get(nid)
        if cfg is None:
            raise ConfigError(f"no node {nid!r} in the mesh", file=file)
        try:
            validate_envoy_config(static_bootstrap(cfg))
        except EnvoyError as exc:
            reason = exc.log.strip().splitlines()[-1] if exc.log.strip() else str(exc)
            raise ConfigError(f"envoy --mode validate refused node {nid}: {reason}", file=file) from exc
    return ids
