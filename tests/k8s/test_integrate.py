"""`envoykit k8s integrate istio|envoy-gateway`: the resources for an existing Istio or Envoy Gateway.
The Envoy parts of the EnvoyFilters are assembled as Istio would apply them (the filters before the
router, the route rate limits on the virtual host, Istio's cluster names) and checked by envoy itself;
the Istio and Envoy Gateway fields are those their references document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.core import envoy_binary
from tests.k8s.helpers import REPO

MESH = str(REPO / "examples" / "mesh.yaml")


def integrate(tmp: Path, *args: str) -> dict[str, list[Any]]:
    r = CliRunner().invoke(main, ["k8s", "integrate", *args, "--mesh", MESH, "-o", str(tmp)])
    assert r.exit_code == 0, r.output
    return {p.name: list(yaml.safe_load_all(p.read_text())) for p in sorted(tmp.glob("*.yaml"))}


def test_istio_resources(tmp_path: Path) -> None:
    files = integrate(tmp_path, "istio", "--namespace", "envoykit")
    assert sorted(files) == [
        "istio-accesslog.yaml",
        "istio-authz.yaml",
        "istio-meshconfig.yaml",
        "istio-ratelimit.yaml",
    ]
    (als,) = files["istio-accesslog.yaml"]
    contexts = [p["match"]["context"] for p in als["spec"]["configPatches"]]
    assert contexts == ["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]
    (op,) = files["istio-meshconfig.yaml"]
    assert op["spec"]["meshConfig"]["extensionProviders"] == [
        {
            "name": "envoykit-authz",
            "envoyExtAuthzGrpc": {
                "service": "envoykit-authz.envoykit.svc.cluster.local",
                "port": 9191,
                "timeout": "0.5s",
                "failOpen": False,
            },
        }
    ]
    policies = {p["metadata"]["name"]: p for p in files["istio-authz.yaml"]}
    assert policies["envoykit-authz-backend"]["spec"] == {
        "selector": {"matchLabels": {"app": "backend"}},
        "action": "CUSTOM",
        "provider": {"name": "envoykit-authz"},
        "rules": [{"to": [{"operation": {"notPaths": ["/healthz"]}}]}],
    }
    assert policies["envoykit-authz-ingressgateway"]["metadata"]["namespace"] == "istio-system"


@pytest.mark.envoy
def test_istio_envoy_filters_load_in_envoy(tmp_path: Path) -> None:
    files = integrate(tmp_path / "out", "istio")
    (rl,) = files["istio-ratelimit.yaml"]
    (als,) = files["istio-accesslog.yaml"]
    http_filters = [p["patch"]["value"] for p in rl["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
    # the GATEWAY patch merged into the gateway's HTTP connection manager, as Istio applies MERGE
    gateway_logs = next(p for p in als["spec"]["configPatches"] if p["match"]["context"] == "GATEWAY")
    access_log = gateway_logs["patch"]["value"]["typed_config"]["access_log"]
    # Istio's proxies may predate CustomTag.value: headers, which the telemetry server reads instead
    assert "custom_tags" not in access_log[0]["typed_config"]["common_config"]
    assert "x-envoykit-peer" in access_log[0]["typed_config"]["additional_request_headers_to_log"]
    vhost_merge = next(
        p["patch"]["value"] for p in rl["spec"]["configPatches"] if p["applyTo"] == "VIRTUAL_HOST"
    )
    clusters = []
    for name in (
        "outbound|8081||envoykit-ratelimit.default.svc.cluster.local",
        "outbound|9293||envoykit-access-log.default.svc.cluster.local",
    ):
        host = name.split("||")[1]
        clusters.append(
            {
                "name": name,
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {
                                                "address": host,
                                                "port_value": int(name.split("|")[1]),
                                            }
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        )
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "gw",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        **vhost_merge,
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                    }
                ]
            },
            "http_filters": [*http_filters, router],
            "access_log": access_log,
        },
    }
    config = {
        "static_resources": {
            "listeners": [
                {
                    "name": "gw",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}},
                    "filter_chains": [{"filters": [hcm]}],
                }
            ],
            "clusters": clusters,
        }
    }
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_envoy_gateway_policies(tmp_path: Path) -> None:
    files = integrate(
        tmp_path, "envoy-gateway", "--namespace", "envoykit", "--gateway", "eg", "--gateway-namespace", "edge"
    )
    (sp,) = files["eg-securitypolicy.yaml"]
    assert (sp["apiVersion"], sp["kind"], sp["metadata"]["namespace"]) == (
        "gateway.envoyproxy.io/v1alpha1",
        "SecurityPolicy",
        "edge",
    )
    assert sp["spec"] == {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}],
        "extAuth": {
            "grpc": {
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": "envoykit-authz",
                        "namespace": "envoykit",
                        "port": 9191,
                    }
                ]
            },
            "failOpen": False,
        },
    }
    assert "eg-extensionpolicy.yaml" not in files  # the demo has no processors nor ext_proc telemetry
    (proxy,) = files["eg-envoyproxy.yaml"]
    (sink,) = proxy["spec"]["telemetry"]["accessLog"]["settings"][0]["sinks"]
    assert sink["type"] == "ALS" and sink["als"]["type"] == "HTTP"
    assert sink["als"]["backendRefs"] == [
        {"name": "envoykit-access-log", "namespace": "envoykit", "port": 9293}
    ]
    (grant,) = files["eg-referencegrant.yaml"]
    assert grant["metadata"]["namespace"] == "envoykit" and grant["spec"]["to"] == [
        {"group": "", "kind": "Service"}
    ]


def _json_patch_add(doc: Any, path: str, value: Any) -> None:
    """RFC 6902 ``add`` at a JSON pointer (objects and arrays; ``-`` appends), as Envoy Gateway applies
    an EnvoyPatchPolicy's operations."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    if isinstance(doc, list):
        doc.insert(len(doc) if last == "-" else int(last), value)
    else:
        doc[last] = value


@pytest.mark.envoy
def test_envoy_gateway_rate_limit_patch_loads_in_envoy(tmp_path: Path) -> None:
    files = integrate(
        tmp_path / "out",
        "envoy-gateway",
        *("--namespace", "envoykit", "--gateway", "eg", "--gateway-namespace", "edge"),
    )
    (policy,) = files["eg-ratelimit.yaml"]
    assert (policy["apiVersion"], policy["kind"], policy["metadata"]["namespace"]) == (
        "gateway.envoyproxy.io/v1alpha1",
        "EnvoyPatchPolicy",
        "edge",
    )
    spec = policy["spec"]
    assert spec["type"] == "JSONPatch"
    assert spec["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"}
    listener_patch, cluster_patch = spec["jsonPatches"]
    assert listener_patch["type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert listener_patch["name"] == "edge/eg/http"  # <gateway namespace>/<gateway>/<listener>
    flt = listener_patch["operation"]["value"]
    assert flt["name"] == "envoy.filters.http.ratelimit"
    assert flt["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"] == {
        "cluster_name": "envoykit-ratelimit"
    }
    assert flt["typed_config"]["rate_limits"]  # the demo's ingress routes' actions, on the filter
    assert cluster_patch["operation"]["path"] == "" and cluster_patch["name"] == "envoykit-ratelimit"
    cluster = cluster_patch["operation"]["value"]
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "envoykit-ratelimit.envoykit.svc.cluster.local", "port_value": 8081}
    }
    # a listener shaped as Envoy Gateway generates one for an HTTP Gateway listener, patched as it
    # applies the policy, must load in Envoy
    listener: dict[str, Any] = {
        "name": "edge/eg/http",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10080}},
        "default_filter_chain": {
            "filters": [
                {
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "http-10080",
                        "route_config": {
                            "name": "edge/eg/http",
                            "virtual_hosts": [
                                {
                                    "name": "edge/eg/http/www_example_com",
                                    "domains": ["www.example.com"],
                                    "routes": [
                                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}
                                    ],
                                }
                            ],
                        },
                        "http_filters": [
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                },
                            }
                        ],
                    },
                }
            ]
        },
    }
    _json_patch_add(listener, listener_patch["operation"]["path"], flt)
    assert listener["default_filter_chain"]["filters"][0]["typed_config"]["http_filters"][0] is flt
    config = {"static_resources": {"listeners": [listener], "clusters": [cluster]}}
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
