"""``envoykit k8s integrate istio|envoy-gateway``: envoykit's servers inside a mesh or gateway the user
already runs. envoykit's servers themselves come from ``envoykit k8s render`` (its ``20-*.yaml``);
these resources wire them in.

Istio (field names from istio.io's reference: ``MeshConfig.ExtensionProvider``,
``AuthorizationPolicy``, ``EnvoyFilter``)::

    istio-meshconfig.yaml        IstioOperator ``spec.meshConfig.extensionProviders``: ``envoykit-authz``
                                 (``envoyExtAuthzGrpc``: service, port, timeout, failOpen)
    istio-authz.yaml             AuthorizationPolicy ``action: CUSTOM`` with ``provider.name: envoykit-authz``
                                 for each service (``app`` label) and the ingress gateway that use authz
    istio-ratelimit.yaml         EnvoyFilter: ``envoy.filters.http.ratelimit`` before the router of the
                                 ingress gateway (its domain, the envoykit-ratelimit cluster), and the
                                 route ``rate_limits`` of the mesh's ingress routes
    istio-accesslog.yaml         EnvoyFilter: the HTTP connection managers of sidecars (inbound reports as
                                 destination, outbound as source) and gateways stream access logs to
                                 envoykit-access-log (``envoy.access_loggers.http_grpc``)
    istio-telemetry.yaml         EnvoyFilter: the telemetry ext_proc (observability mode) on sidecars, for
                                 services with ``telemetry: true``

Envoy Gateway (``gateway.envoyproxy.io/v1alpha1``)::

    eg-securitypolicy.yaml       SecurityPolicy ``extAuth.grpc.backendRefs`` → envoykit-authz
    eg-envoyproxy.yaml           EnvoyProxy ``telemetry.accessLog`` with an ALS sink → envoykit-access-log
    eg-extensionpolicy.yaml      EnvoyExtensionPolicy ``extProc`` → user processors (and the ext_proc
                                 telemetry server where the mesh uses it)
    eg-referencegrant.yaml       ReferenceGrant letting the policies reach Services in envoykit's namespace
    eg-ratelimit.yaml            EnvoyPatchPolicy (JSONPatch on the xDS Envoy Gateway generates; needs
                                 ``extensionApis.enableEnvoyPatchPolicy: true`` in the EnvoyGateway
                                 config): ``envoy.filters.http.ratelimit`` first in the Gateway
                                 listener's HTTP filters, carrying the ingress routes' rate-limit
                                 actions itself (the filter's ``rate_limits``, so no route is patched),
                                 and an ``envoykit-ratelimit`` cluster. Envoy Gateway's own global rate
                                 limit (BackendTrafficPolicy) runs the rate-limit service it deploys and
                                 configures; it has no field naming another one.

Envoy's own parts (the filters' ``typed_config``) are built with the same builders the control plane
uses and printed with their ``@type``; Istio names a Service's cluster
``outbound|<port>||<service FQDN>``, which the patches use.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.types import Address
from envoykit.control.translate import filters as f
from envoykit.control.translate.accesslog import ACCESS_LOG_CLUSTER, http_access_logs
from envoykit.control.translate.clusters import RATELIMIT_CLUSTER, TELEMETRY_CLUSTER, static_cluster
from envoykit.control.translate.routes import rate_limits
from envoykit.k8s import names
from envoykit.k8s.kmesh import ACCESS_LOG

Obj = dict[str, Any]
ISTIO_PROVIDER = "envoykit-authz"
HCM = "envoy.filters.network.http_connection_manager"


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _json(msg: Any) -> Obj:
    # through JSON: MessageToDict gives OrderedDicts for Any fields, which YAML's safe dumper refuses
    out: Obj = json.loads(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    return out


def _rename_cluster(value: Any, old: str, new: str) -> Any:
    """``value`` with every ``cluster_name: old`` replaced (the filter builders name envoykit's clusters)."""
    if isinstance(value, dict):
        return {
            k: (new if k == "cluster_name" and v == old else _rename_cluster(v, old, new))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rename_cluster(v, old, new) for v in value]
    return value


def _meta(name: str, ns: str) -> Obj:
    return {"name": name, "namespace": ns, "labels": {**names.PART_OF, names.COMPONENT_LABEL: "integration"}}


def istio(
    mesh: Mesh, ns: str, cluster_domain: str = "cluster.local", istio_ns: str = "istio-system"
) -> dict[str, list[Obj]]:
    """The Istio resources for ``mesh`` whose servers run in ``ns`` (see the module docstring)."""
    ext = mesh.extensions

    def fqdn(server: str) -> str:
        return names.service_dns(f"envoykit-{server}", ns, cluster_domain)

    files: dict[str, list[Obj]] = {}
    files["istio-meshconfig.yaml"] = [
        {
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": "envoykit", "namespace": istio_ns},
            "spec": {
                "meshConfig": {
                    "extensionProviders": [
                        {
                            "name": ISTIO_PROVIDER,
                            "envoyExtAuthzGrpc": {
                                "service": fqdn("authz"),
                                "port": ext.authz.address.port,
                                "timeout": _duration(ext.authz.timeout),
                                "failOpen": ext.authz.failure_mode_allow,
                            },
                        }
                    ]
                }
            },
        }
    ]
    policies = []
    for svc in mesh.services:
        if svc.extensions.authz is None:
            continue
        rule: Obj = {}
        if svc.extensions.authz.skip_paths:
            rule = {"to": [{"operation": {"notPaths": list(svc.extensions.authz.skip_paths)}}]}
        policies.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": _meta(f"envoykit-authz-{svc.name}", mesh.ns(svc)),
                "spec": {
                    "selector": {"matchLabels": {"app": svc.name}},
                    "action": "CUSTOM",
                    "provider": {"name": ISTIO_PROVIDER},
                    "rules": [rule],
                },
            }
        )
    ingress = next((g for g in mesh.gateways if g.kind == "ingress"), None)
    if ingress is not None and ingress.extensions.authz is not None:
        policies.append(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": _meta("envoykit-authz-ingressgateway", istio_ns),
                "spec": {
                    "selector": {"matchLabels": {"istio": "ingressgateway"}},
                    "action": "CUSTOM",
                    "provider": {"name": ISTIO_PROVIDER},
                    "rules": [{}],
                },
            }
        )
    if policies:
        files["istio-authz.yaml"] = policies
    if ingress is not None and ingress.extensions.ratelimit is not None:
        rl = ingress.extensions.ratelimit
        cluster = f"outbound|{ext.ratelimit.address.port}||{fqdn('ratelimit')}"
        flt = _rename_cluster(
            _json(f.ratelimit_filter(mesh, rl.domain, rl.failure_mode_deny)), RATELIMIT_CLUSTER, cluster
        )
        patches: list[Obj] = [
            {
                "applyTo": "HTTP_FILTER",
                "match": {
                    "context": "GATEWAY",
                    "listener": {
                        "filterChain": {
                            "filter": {"name": HCM, "subFilter": {"name": "envoy.filters.http.router"}}
                        }
                    },
                },
                "patch": {"operation": "INSERT_BEFORE", "value": flt},
            }
        ]
        actions = _ingress_rate_limits(mesh, ingress.name)
        if actions:
            patches.append(
                {
                    "applyTo": "VIRTUAL_HOST",
                    "match": {"context": "GATEWAY"},
                    "patch": {"operation": "MERGE", "value": {"rate_limits": actions}},
                }
            )
        files["istio-ratelimit.yaml"] = [
            {
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": _meta("envoykit-ratelimit", istio_ns),
                "spec": {
                    "workloadSelector": {"labels": {"istio": "ingressgateway"}},
                    "configPatches": patches,
                },
            }
        ]
    if ext.access_log.enabled:
        cluster = (
            f"outbound|{ext.access_log.address.port}||{names.service_dns(ACCESS_LOG, ns, cluster_domain)}"
        )
        hcm_type = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

        def loggers(reporter: str) -> Obj:
            logs = [
                _rename_cluster(_json(a), ACCESS_LOG_CLUSTER, cluster)
                for a in http_access_logs(
                    ext.access_log, reporter, tagged=False, transport="grpc"
                )  # Istio's Envoy version
            ]
            return {"typed_config": {"@type": hcm_type, "access_log": logs}}

        files["istio-accesslog.yaml"] = [
            {
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": _meta("envoykit-access-log", istio_ns),
                "spec": {
                    "configPatches": [
                        {
                            "applyTo": "NETWORK_FILTER",
                            "match": {
                                "context": context,
                                "listener": {"filterChain": {"filter": {"name": HCM}}},
                            },
                            "patch": {"operation": "MERGE", "value": loggers(reporter)},
                        }
                        for context, reporter in (
                            ("SIDECAR_INBOUND", "destination"),
                            ("SIDECAR_OUTBOUND", "source"),
                            ("GATEWAY", "source"),
                        )
                    ]
                },
            }
        ]
    if any(s.extensions.telemetry for s in mesh.services):
        cluster = f"outbound|{ext.telemetry.address.port}||{fqdn('telemetry')}"
        flt = _rename_cluster(_json(f.telemetry_filter(mesh)), TELEMETRY_CLUSTER, cluster)
        files["istio-telemetry.yaml"] = [
            {
                "apiVersion": "networking.istio.io/v1alpha3",
                "kind": "EnvoyFilter",
                "metadata": _meta("envoykit-telemetry", istio_ns),
                "spec": {
                    "configPatches": [
                        {
                            "applyTo": "HTTP_FILTER",
                            "match": {
                                "context": "SIDECAR_INBOUND",
                                "listener": {
                                    "filterChain": {
                                        "filter": {
                                            "name": HCM,
                                            "subFilter": {"name": "envoy.filters.http.router"},
                                        }
                                    }
                                },
                            },
                            "patch": {"operation": "INSERT_BEFORE", "value": flt},
                        }
                    ]
                },
            }
        ]
    return files


def _ingress_rate_limits(mesh: Mesh, gateway_name: str) -> list[Obj]:
    """The rate-limit actions of the routes bound to ``gateway_name`` (``config.route.v3.RateLimit``)."""
    return [
        _json(r)
        for vs in mesh.virtual_services
        if gateway_name in vs.gateways
        for route in vs.http
        for r in rate_limits(route.rate_limits)
    ]


EG_RATELIMIT_CLUSTER = "envoykit-ratelimit"


def envoy_gateway_ratelimit(
    mesh: Mesh, ns: str, gateway: str, gateway_ns: str, listener: str, cluster_domain: str
) -> list[Obj]:
    """The EnvoyPatchPolicy wiring envoykit's rate-limit server into Gateway ``gateway_ns/gateway``'s
    listener ``listener`` (an HTTP listener: its connection manager is the default filter chain's
    first filter), or [] when the mesh's ingress gateway uses no rate limit.

    Envoy Gateway names a listener and its route configuration ``<namespace>/<gateway>/<listener>``
    (its EnvoyPatchPolicy task); a JSONPatch ``add`` with an empty path adds a whole resource.
    """
    ingress = next((g for g in mesh.gateways if g.kind == "ingress"), None)
    if ingress is None or ingress.extensions.ratelimit is None:
        return []
    rl = ingress.extensions.ratelimit
    flt = _rename_cluster(
        _json(f.ratelimit_filter(mesh, rl.domain, rl.failure_mode_deny)),
        RATELIMIT_CLUSTER,
        EG_RATELIMIT_CLUSTER,
    )
    actions = _ingress_rate_limits(mesh, ingress.name)
    if actions:  # the filter's own descriptors: route and virtual host rate_limits are then ignored
        flt["typed_config"]["rate_limits"] = actions
    host = names.service_dns(EG_RATELIMIT_CLUSTER, ns, cluster_domain)
    cluster = _json(
        static_cluster(
            EG_RATELIMIT_CLUSTER,
            [Address(host=host, port=mesh.extensions.ratelimit.address.port)],
            http2=True,
        )
    )
    return [
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "EnvoyPatchPolicy",
            "metadata": _meta("envoykit-ratelimit", gateway_ns),
            "spec": {
                "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
                "type": "JSONPatch",
                "jsonPatches": [
                    {
                        "type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                        "name": f"{gateway_ns}/{gateway}/{listener}",
                        "operation": {
                            "op": "add",
                            "path": "/default_filter_chain/filters/0/typed_config/http_filters/0",
                            "value": flt,
                        },
                    },
                    {
                        "type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                        "name": EG_RATELIMIT_CLUSTER,
                        "operation": {"op": "add", "path": "", "value": cluster},
                    },
                ],
            },
        }
    ]


def envoy_gateway(
    mesh: Mesh,
    ns: str,
    gateway: str,
    gateway_ns: str,
    listener: str = "http",
    cluster_domain: str = "cluster.local",
) -> dict[str, list[Obj]]:
    """Envoy Gateway policies attaching envoykit's servers (in ``ns``) to Gateway ``gateway_ns/gateway``
    (its listener ``listener`` for the rate limit)."""
    ext = mesh.extensions
    target = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}]

    def ref(server: str, port: int) -> Obj:
        return {"group": "", "kind": "Service", "name": f"envoykit-{server}", "namespace": ns, "port": port}

    files: dict[str, list[Obj]] = {
        "eg-securitypolicy.yaml": [
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "SecurityPolicy",
                "metadata": _meta("envoykit-authz", gateway_ns),
                "spec": {
                    "targetRefs": target,
                    "extAuth": {
                        "grpc": {"backendRefs": [ref("authz", ext.authz.address.port)]},
                        "failOpen": ext.authz.failure_mode_allow,
                    },
                },
            }
        ]
    }
    if ext.access_log.enabled:
        # the Gateway's Envoys stream access logs to envoykit's telemetry server (an ALS sink); the
        # GatewayClass or Gateway names this EnvoyProxy in its parametersRef
        from envoykit.core.accesslog import LOG_NAMES, REQUEST_HEADERS, RESPONSE_HEADERS, RESPONSE_TRAILERS

        files["eg-envoyproxy.yaml"] = [
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "EnvoyProxy",
                "metadata": _meta("envoykit-telemetry", gateway_ns),
                "spec": {
                    "telemetry": {
                        "accessLog": {
                            "settings": [
                                {
                                    "sinks": [
                                        {
                                            "type": "ALS",
                                            "als": {
                                                "backendRefs": [
                                                    {
                                                        "name": ACCESS_LOG,
                                                        "namespace": ns,
                                                        "port": ext.access_log.address.port,
                                                    }
                                                ],
                                                "logName": LOG_NAMES["source"],
                                                "type": "HTTP",
                                                "http": {
                                                    "requestHeaders": list(REQUEST_HEADERS),
                                                    "responseHeaders": list(RESPONSE_HEADERS),
                                                    "responseTrailers": list(RESPONSE_TRAILERS),
                                                },
                                            },
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            }
        ]
    procs: list[Obj] = []
    if any(s.extensions.telemetry for s in mesh.services) or any(
        g.extensions.telemetry for g in mesh.gateways
    ):
        procs.append(
            {
                "backendRefs": [ref("telemetry", ext.telemetry.address.port)],
                "messageTimeout": _duration(ext.telemetry.timeout),
                # telemetry observes; a request never fails because it is down (as on envoykit's proxies)
                "failOpen": True,
                "processingMode": {"response": {}},
            }
        )
    for p in ext.processors:
        mode: Obj = {"request": {}, "response": {}}
        if p.request_body_mode != "NONE":
            mode["request"]["body"] = p.request_body_mode.capitalize()
        if p.response_body_mode != "NONE":
            mode["response"]["body"] = p.response_body_mode.capitalize()
        procs.append(
            {
                "backendRefs": [ref(f"processor-{p.name}", p.address.port)],
                "messageTimeout": _duration(p.timeout),
                "failOpen": p.failure_mode_allow,
                "processingMode": mode,
            }
        )
    if procs:
        files["eg-extensionpolicy.yaml"] = [
            {
                "apiVersion": "gateway.envoyproxy.io/v1alpha1",
                "kind": "EnvoyExtensionPolicy",
                "metadata": _meta("envoykit-extproc", gateway_ns),
                "spec": {"targetRefs": target, "extProc": procs},
            }
        ]
    ratelimit = envoy_gateway_ratelimit(mesh, ns, gateway, gateway_ns, listener, cluster_domain)
    if ratelimit:
        files["eg-ratelimit.yaml"] = ratelimit
    if gateway_ns != ns:
        files["eg-referencegrant.yaml"] = [
            {
                "apiVersion": "gateway.networking.k8s.io/v1beta1",
                "kind": "ReferenceGrant",
                "metadata": _meta("envoykit-policies", ns),
                "spec": {
                    "from": [
                        {"group": "gateway.envoyproxy.io", "kind": k, "namespace": gateway_ns}
                        for k in ("SecurityPolicy", "EnvoyExtensionPolicy", "EnvoyProxy")
                    ],
                    "to": [{"group": "", "kind": "Service"}],
                },
            }
        ]
    return files
