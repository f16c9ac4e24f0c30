"""``envoykit envoy inject``: add envoykit's filters and clusters to a static Envoy config you run yourself.

Every HTTP connection manager of the static listeners gets, before its router: the telemetry ext_proc,
ext_authz, the rate-limit filter and Wasm filters (the same messages the control plane builds for the
mesh); the extension clusters are added to ``static_resources.clusters``; rate-limit descriptors go on
every virtual host of inline route configs. The result is checked with ``envoy --mode validate``.

It refuses, saying why, a config it cannot patch safely: no static HTTP listener, an HCM whose last
filter is not the router, a filter or cluster already present, descriptors for routes served over RDS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from envoykit.control import clusters as cl
from envoykit.control import filters as fl
from envoykit.control.model import (
    AuthzServer,
    ExtensionServers,
    Mesh,
    RateLimitServer,
    TelemetryServer,
    WasmPlugin,
)
from envoykit.control.routes import rate_limits
from envoykit.control.traffic import RouteRateLimit
from envoykit.control.types import Address
from envoykit.core.envoy import EnvoyError, validate_envoy_config
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import load_yaml_file

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


@dataclass
class InjectOptions:
    """What to add. Addresses are ``host:port``; ``wasm`` entries ``FILE[:ROOT_ID[:CONFIGURATION]]``;
    ``descriptors`` entries ``remote_address``, ``header:NAME=KEY`` or ``generic:KEY=VALUE``."""

    authz: str | None = None
    ratelimit: str | None = None
    ratelimit_domain: str = "envoykit"
    descriptors: list[str] = field(default_factory=list)
    extproc: str | None = None
    wasm: list[str] = field(default_factory=list)


def _d(msg: Message) -> dict[str, Any]:
    # through JSON: MessageToDict may hand back OrderedDicts, which YAML cannot dump safely
    out: dict[str, Any] = json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    return out


def _descriptor(text: str) -> dict[str, Any]:
    if text == "remote_address":
        return {"remote_address": {}}
    kind, _, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if kind == "header" and eq and key and value:
        return {"request_headers": {"header_name": key, "descriptor_key": value}}
    if kind == "generic" and eq and key and value:
        return {"generic_key": {"descriptor_key": key, "descriptor_value": value}}
    raise ValueError(f"bad descriptor {text!r}: use remote_address, header:NAME=KEY or generic:KEY=VALUE")


def _wasm(spec: str, base: Path) -> WasmPlugin:
    file, _, rest = spec.partition(":")
    root_id, _, conf = rest.partition(":")
    path = Path(file)
    path = path if path.is_absolute() else (base / path).resolve()
    if not path.is_file():
        raise ValueError(f"--wasm {file}: no such file")
    return WasmPlugin(
        name=path.stem.lower().replace("_", "-"), file=str(path), root_id=root_id, configuration=conf
    )


def _hcms(config: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for lst in config.get("static_resources", {}).get("listeners", []) or []:
        chains = list(lst.get("filter_chains", []) or [])
        if lst.get("default_filter_chain"):
            chains.append(lst["default_filter_chain"])
        for chain in chains:
            for f in chain.get("filters", []) or []:
                tc = f.get("typed_config") or {}
                if tc.get("@type") == _HCM:
                    out.append(tc)
    return out


def inject_config(config: Any, opts: InjectOptions, base_dir: Path = Path(".")) -> dict[str, Any]:
    """Return a patched copy of ``config`` (a bootstrap in its JSON/YAML form).

    Raises:
        ValueError: the config cannot be patched safely (the message says why), or bad options.
    """
    if not isinstance(config, dict):
        raise ValueError("not an Envoy bootstrap (expected a mapping)")
    config = yaml.safe_load(yaml.safe_dump(config))  # deep copy of plain data
    hcms = _hcms(config)
    if not hcms:
        lds = "lds_config" in (config.get("dynamic_resources") or {})
        raise ValueError(
            "listeners come over LDS: patch the control plane instead"
            if lds
            else "no static listener with an HTTP connection manager to add filters to"
        )
    servers = ExtensionServers()
    if opts.authz:
        servers.authz = AuthzServer(address=Address.model_validate(opts.authz))
    if opts.ratelimit:
        servers.ratelimit = RateLimitServer(address=Address.model_validate(opts.ratelimit))
    if opts.extproc:
        servers.telemetry = TelemetryServer(address=Address.model_validate(opts.extproc))
    mesh = Mesh(extensions=servers)
    plugins = [_wasm(w, base_dir) for w in opts.wasm]
    new_filters: list[dict[str, Any]] = []
    new_clusters: list[dict[str, Any]] = []
    if opts.extproc:
        new_filters.append(_d(fl.telemetry_filter(mesh)))
        new_clusters.append(
            _d(cl.static_cluster(cl.TELEMETRY_CLUSTER, [servers.telemetry.address], http2=True))
        )
    if opts.authz:
        new_filters.append(_d(fl.ext_authz_filter(mesh)))
        new_clusters.append(_d(cl.static_cluster(cl.AUTHZ_CLUSTER, [servers.authz.address], http2=True)))
    if opts.ratelimit:
        new_filters.append(_d(fl.ratelimit_filter(mesh, opts.ratelimit_domain, False)))
        new_clusters.append(
            _d(cl.static_cluster(cl.RATELIMIT_CLUSTER, [servers.ratelimit.address], http2=True))
        )
    new_filters += [_d(fl.wasm_filter(p, base_dir)) for p in plugins]
    if not new_filters:
        raise ValueError("nothing to inject: give --authz, --ratelimit, --extproc or --wasm")
    descriptors: list[dict[str, Any]] = []
    if opts.descriptors:
        if not opts.ratelimit:
            raise ValueError("--descriptor needs --ratelimit")
        rl = RouteRateLimit.model_validate({"actions": [_descriptor(d) for d in opts.descriptors]})
        descriptors = [_d(r) for r in rate_limits([rl])]

    for hcm in hcms:
        filters = hcm.setdefault("http_filters", [])
        last = filters[-1] if filters else {}
        if (last.get("typed_config") or {}).get("@type") != _ROUTER and last.get("name") != fl.ROUTER:
            raise ValueError(f"HCM {hcm.get('stat_prefix', '?')}: the last HTTP filter is not the router")
        present = {(f.get("typed_config") or {}).get("@type") for f in filters} | {
            f.get("name") for f in filters
        }
        for nf in new_filters:
            if nf["typed_config"]["@type"] in present and "wasm" not in nf["typed_config"]["@type"]:
                raise ValueError(
                    f"HCM {hcm.get('stat_prefix', '?')} already has {nf['typed_config']['@type']}"
                )
            if nf["name"] in present:
                raise ValueError(f"HCM {hcm.get('stat_prefix', '?')} already has a filter named {nf['name']}")
        filters[-1:-1] = [dict(nf) for nf in new_filters]
        if descriptors:
            if "route_config" not in hcm:
                raise ValueError(
                    f"HCM {hcm.get('stat_prefix', '?')}: routes come over RDS; cannot add descriptors"
                )
            for vh in hcm["route_config"].get("virtual_hosts", []):
                vh.setdefault("rate_limits", []).extend(descriptors)
    clusters = config.setdefault("static_resources", {}).setdefault("clusters", [])
    names = {c.get("name") for c in clusters}
    for c in new_clusters:
        if c["name"] in names:
            raise ValueError(f"a cluster named {c['name']!r} already exists")
        clusters.append(c)
    return config


def inject_file(
    path: Path, opts: InjectOptions, output: Path | None = None, *, validate: bool = True
) -> Path:
    """Patch the config at ``path``, write it to ``output`` (default ``<name>.envoykit.yaml``) and check
    it with ``envoy --mode validate``.

    Raises:
        ConfigError: unreadable file, unpatchable config, or Envoy refused the result.
    """
    doc = load_yaml_file(path)
    try:
        patched = inject_config(doc.data, opts, path.resolve().parent)
    except ValueError as exc:
        raise ConfigError(f"cannot inject: {exc}", file=str(path)) from exc
    out = output or path.with_name(f"{path.stem}.envoykit.yaml")
    out.write_text(yaml.safe_dump(patched, sort_keys=False))
    if validate:
        try:
            validate_envoy_config(out)
        except EnvoyError as exc:
            last = exc.log.strip().splitlines()[-1] if exc.log.strip() else str(exc)
            raise ConfigError(f"envoy --mode validate refused the result: {last}", file=str(out)) from exc
    return out
