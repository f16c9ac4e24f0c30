"""HTTP filters for envoykit's extensions, as Envoy protobuf messages, and their per-route configs.

The control plane knows how to *wire* each extension server into Envoy, never its code:

* ext_authz: ``envoy.filters.http.ext_authz`` (``envoy.extensions.filters.http.ext_authz.v3.ExtAuthz``),
  gRPC V3, fails closed unless ``failure_mode_allow``, sends the peer certificate so the server sees the
  source principal; per route ``ExtAuthzPerRoute`` (disable, ``context_extensions``).
* rate limit: ``envoy.filters.http.ratelimit`` (``...ratelimit.v3.RateLimit``) with a ``domain``; the
  descriptors come from route ``rate_limits`` actions.
* ext_proc (``...ext_proc.v3.ExternalProcessor``), named ``envoykit.telemetry`` /
  ``envoykit.processor.<name>``: the telemetry processor in observability mode (never delays or
  fails a request), and user processors.
* Wasm: named ``envoykit.wasm.<name>`` (``...wasm.v3.Wasm``) on the V8 runtime from a local file.
* fault: ``envoy.filters.http.fault`` (empty; each route carries its ``HTTPFault``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.ratelimit.v3 import rls_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2, processing_mode_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as wasm_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.wasm.v3 import wasm_pb2
from envoy.type.matcher.v3.metadata_pb2 import MetadataMatcher
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from envoykit.control.model.mesh import Mesh, ProcessorServer, ProxyExtensions, WasmPlugin
from envoykit.control.translate.clusters import (
    AUTHZ_CLUSTER,
    RATELIMIT_CLUSTER,
    TELEMETRY_CLUSTER,
    processor_cluster_name,
)
from envoykit.control.translate.pb import duration, envoy_grpc, pack
from envoykit.core.extproc import PROCESSORS_HEADER, RESPONSE_ATTRIBUTES, TELEMETRY_PROCESSOR

if TYPE_CHECKING:
    from envoykit.core.authzgate import Gate

EXT_AUTHZ = "envoy.filters.http.ext_authz"
RATELIMIT = "envoy.filters.http.ratelimit"
FAULT = "envoy.filters.http.fault"
ROUTER = "envoy.filters.http.router"
TELEMETRY_FILTER = "envoykit.telemetry"
_HEADER_MODE = processing_mode_pb2.ProcessingMode.HeaderSendMode
_BODY_MODE = processing_mode_pb2.ProcessingMode.BodySendMode


def http_filter(name: str, config: Message) -> hcm.HttpFilter:
    """An ``HttpFilter`` named ``name`` with ``config`` as its typed config."""
    return hcm.HttpFilter(name=name, typed_config=pack(config))


#: Node metadata key holding the workload's labels (a Struct of strings).
LABELS_KEY = "labels"


def ext_authz_filter(mesh: Mesh, enabled: MetadataMatcher | None = None) -> hcm.HttpFilter:
    """ext_authz over gRPC (V3) to the ``ext_authz`` cluster, sending the peer certificate and the
    node's ``labels`` (``attributes.destination.labels``); ``enabled``: its ``filter_enabled_metadata``
    (the native gate's)."""
    srv = mesh.extensions.authz
    conf = ext_authz_pb2.ExtAuthz(
        grpc_service=envoy_grpc(AUTHZ_CLUSTER, srv.timeout),
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=srv.failure_mode_allow,
        include_peer_certificate=True,
        # the destination workload's labels (AuthorizationPolicy selectors) from node metadata
        bootstrap_metadata_labels_key=LABELS_KEY,
    )
    if enabled is not None:
        conf.filter_enabled_metadata.CopyFrom(enabled)
    return http_filter(EXT_AUTHZ, conf)


def authz_per_route(disabled: bool, context_extensions: dict[str, str]) -> ext_authz_pb2.ExtAuthzPerRoute:
    """``ExtAuthzPerRoute``: skip the check, or send ``context_extensions`` with it."""
    if disabled:
        return ext_authz_pb2.ExtAuthzPerRoute(disabled=True)
    return ext_authz_pb2.ExtAuthzPerRoute(
        check_settings=ext_authz_pb2.CheckSettings(context_extensions=context_extensions)
    )


def ratelimit_filter(mesh: Mesh, domain: str, failure_mode_deny: bool) -> hcm.HttpFilter:
    """The global rate-limit filter for ``domain`` calling the ``rate_limit_service`` cluster (V3)."""
    srv = mesh.extensions.ratelimit
    return http_filter(
        RATELIMIT,
        rate_limit_pb2.RateLimit(
            domain=domain,
            failure_mode_deny=failure_mode_deny,
            timeout=envoy_grpc(RATELIMIT_CLUSTER, srv.timeout).timeout,
            rate_limit_service=rls_pb2.RateLimitServiceConfig(
                grpc_service=envoy_grpc(RATELIMIT_CLUSTER), transport_api_version=config_source_pb2.V3
            ),
        ),
    )


def telemetry_filter(mesh: Mesh) -> hcm.HttpFilter:
    """The telemetry ext_proc in observability mode (as envoy/extproc.yaml): only response headers are
    sent, with :data:`envoykit.core.extproc.RESPONSE_ATTRIBUTES`; Envoy never waits for it and passes when it is down."""
    srv = mesh.extensions.telemetry
    grpc = envoy_grpc(TELEMETRY_CLUSTER)
    grpc.initial_metadata.append(base_pb2.HeaderValue(key=PROCESSORS_HEADER, value=TELEMETRY_PROCESSOR))
    conf = ext_proc_pb2.ExternalProcessor(
        grpc_service=grpc,
        observability_mode=True,
        failure_mode_allow=True,
        stat_prefix="telemetry",
        deferred_close_timeout=duration(max(srv.timeout, 1.0)),
        processing_mode=processing_mode_pb2.ProcessingMode(
            request_header_mode=_HEADER_MODE.SKIP,
            response_header_mode=_HEADER_MODE.SEND,
            request_body_mode=_BODY_MODE.NONE,
            response_body_mode=_BODY_MODE.NONE,
            request_trailer_mode=_HEADER_MODE.SKIP,
            response_trailer_mode=_HEADER_MODE.SKIP,
        ),
        response_attributes=list(RESPONSE_ATTRIBUTES),
    )
    return http_filter(TELEMETRY_FILTER, conf)


def processor_filter(proc: ProcessorServer) -> hcm.HttpFilter:
    """A user ext_proc processor with its processing modes."""
    grpc = envoy_grpc(processor_cluster_name(proc.name), proc.timeout)
    grpc.initial_metadata.append(base_pb2.HeaderValue(key=PROCESSORS_HEADER, value=proc.name))
    return http_filter(
        f"envoykit.processor.{proc.name}",
        ext_proc_pb2.ExternalProcessor(
            grpc_service=grpc,
            failure_mode_allow=proc.failure_mode_allow,
            stat_prefix=proc.name,
            processing_mode=processing_mode_pb2.ProcessingMode(
                request_header_mode=_HEADER_MODE.Value(proc.request_header_mode),
                response_header_mode=_HEADER_MODE.Value(proc.response_header_mode),
                request_body_mode=_BODY_MODE.Value(proc.request_body_mode),
                response_body_mode=_BODY_MODE.Value(proc.response_body_mode),
                request_trailer_mode=_HEADER_MODE.SKIP,
                response_trailer_mode=_HEADER_MODE.SKIP,
            ),
        ),
    )


def wasm_filter(plugin: WasmPlugin, base_dir: Path) -> hcm.HttpFilter:
    """A Proxy-Wasm plugin from a local ``.wasm`` file on V8; ``configuration`` passed as a string."""
    conf = plugin.configuration
    text = conf if isinstance(conf, str) else json.dumps(conf, separators=(",", ":"))
    path = Path(plugin.file)
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    return http_filter(
        f"envoykit.wasm.{plugin.name}",
        wasm_filter_pb2.Wasm(
            config=wasm_pb2.PluginConfig(
                name=plugin.name,
                root_id=plugin.root_id,
                configuration=pack(wrappers_pb2.StringValue(value=text)),
                fail_open=plugin.fail_open,
                vm_config=wasm_pb2.VmConfig(
                    vm_id=plugin.vm_id or plugin.name,
                    runtime="envoy.wasm.runtime.v8",
                    code=base_pb2.AsyncDataSource(local=base_pb2.DataSource(filename=str(path))),
                ),
            )
        ),
    )


def fault_filter() -> hcm.HttpFilter:
    """The fault filter with no defaults: routes carry their own ``HTTPFault``."""
    return http_filter(FAULT, fault_pb2.HTTPFault())


def request_header_filter(option: base_pb2.HeaderValueOption) -> hcm.HttpFilter:
    """``envoy.filters.http.header_mutation`` setting one request header on every request (for a
    listener whose route configuration is shared between nodes)."""
    rule = mutation_rules_pb2.HeaderMutation(append=option)
    conf = header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=[rule])
    )
    return http_filter("envoy.filters.http.header_mutation", conf)


def router_filter() -> hcm.HttpFilter:
    """The terminal router filter."""
    return http_filter(ROUTER, router_pb2.Router())


def extension_filters(
    mesh: Mesh, ext: ProxyExtensions, base_dir: Path, *, fault: bool = False, gate: Gate | None = None
) -> list[hcm.HttpFilter]:
    """The HTTP filter chain for a proxy's ``extensions``, in order:
    telemetry → (native gate →) ext_authz → ratelimit → fault → processors → wasm → router."""
    out: list[hcm.HttpFilter] = []
    if ext.telemetry:
        out.append(telemetry_filter(mesh))
    if ext.authz is not None:
        if gate is not None:
            out.extend(gate.filters)
        out.append(ext_authz_filter(mesh, gate.ext_authz_enabled if gate is not None else None))
    if ext.ratelimit is not None:
        out.append(ratelimit_filter(mesh, ext.ratelimit.domain, ext.ratelimit.failure_mode_deny))
    if fault:
        out.append(fault_filter())
    for name in ext.processors:
        proc = mesh.processor(name)
        if proc is not None:
            out.append(processor_filter(proc))
    for name in ext.wasm:
        plugin = mesh.wasm_plugin(name)
        if plugin is not None:
            out.append(wasm_filter(plugin, base_dir))
    out.append(router_filter())
    return out
