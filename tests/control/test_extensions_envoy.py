"""Extension wiring through real Envoys fed by the control plane: ext_authz (context extensions, peer
certificate, per-route disable, fail closed), rate-limit descriptors, telemetry attributes, a Wasm filter."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.control.apps import Echo
from tests.control.doubles import GrpcDouble
from tests.control.meshkit import addr, control_plane, get, start_nodes, wait_until, workload, write_mesh
from tests.upstream import EchoServer

pytestmark = pytest.mark.envoy


def extension_mesh(app: EchoServer, authz: str, ratelimit: str, extproc: str) -> dict[str, Any]:
    return {
        "trust_domain": "test.local",
        "extensions": {
            "authz": {"address": authz},
            "ratelimit": {"address": ratelimit},
            "telemetry": {"address": extproc},
        },
        "services": [
            {
                "name": "frontend",
                "mtls": "STRICT",
                "extensions": {"authz": {"skip_paths": ["/healthz"]}, "telemetry": True},
                "workloads": [workload("frontend-v1", "v1", app.port)],
            }
        ],
        "gateways": [
            {
                "name": "ingress",
                "kind": "ingress",
                "address": addr(),
                "admin": addr(),
                "extensions": {
                    "authz": {"context_extensions": {"gateway": "ingress"}},
                    "ratelimit": {"domain": "edge"},
                },
            }
        ],
        "virtual_services": [
            {
                "name": "ingress",
                "hosts": ["*"],
                "gateways": ["ingress"],
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/public"}}],
                        "route": [{"destination": {"host": "frontend"}}],
                        "authz": {"disabled": True},
                    },
                    {
                        "route": [{"destination": {"host": "frontend"}}],
                        "authz": {"context_extensions": {"route": "main"}},
                        "rate_limits": [
                            {
                                "actions": [
                                    {"generic_key": {"descriptor_value": "ingress"}},
                                    {
                                        "request_headers": {
                                            "header_name": "x-client-id",
                                            "descriptor_key": "client_id",
                                        }
                                    },
                                ]
                            }
                        ],
                    },
                ],
            }
        ],
    }


def test_authz_ratelimit_and_telemetry_wiring(envoy: Any, tmp_path: Path) -> None:
    with (
        Echo("frontend-v1") as app,
        GrpcDouble("authz") as authz,
        GrpcDouble("ratelimit") as rls,
        GrpcDouble("extproc") as extproc,
    ):
        mesh = extension_mesh(app, authz.address, rls.address, extproc.address)
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "ingress~ingress", "sidecar~frontend-v1")
            url = f"http://{mesh['gateways'][0]['address']}"
            r = get(f"{url}/hello", headers={"x-client-id": "alice"})
            assert r.status_code == 200, r.text
            # ingress check (context extensions merged from the proxy and the route) then the sidecar's,
            # which sees the ingress's SPIFFE ID as the source principal (peer certificate included)
            wait_until(lambda: len(authz.requests) == 2)
            at_ingress, at_sidecar = authz.requests
            assert dict(at_ingress.attributes.context_extensions) == {"gateway": "ingress", "route": "main"}
            assert at_sidecar.attributes.source.principal == "spiffe://test.local/ns/default/sa/ingress"
            assert at_sidecar.attributes.source.certificate  # include_peer_certificate
            # what an AuthorizationPolicy's scope reads: this workload's labels and SPIFFE ID
            assert dict(at_sidecar.attributes.destination.labels) == {"app": "frontend", "version": "v1"}
            assert at_sidecar.attributes.destination.principal == "spiffe://test.local/ns/default/sa/frontend"
            (desc,) = rls.requests[-1].descriptors
            assert rls.requests[-1].domain == "edge"
            assert [(e.key, e.value) for e in desc.entries] == [
                ("generic_key", "ingress"),
                ("client_id", "alice"),
            ]
            assert get(f"{url}/hello", headers={"x-client-id": "greedy"}).status_code == 429
            assert get(f"{url}/deny").status_code == 403
            n = len(authz.requests)
            assert get(f"{url}/public/x").status_code == 200  # authz disabled on this route at the ingress
            wait_until(lambda: len(authz.requests) == n + 1)  # ... only the sidecar checked it
            assert authz.requests[-1].attributes.source.principal.endswith("/sa/ingress")
            # telemetry: the sidecar's ext_proc got the response headers with the node metadata contract
            wait_until(lambda: any(r.HasField("response_headers") for r in extproc.requests))
            resp = next(r for r in extproc.requests if r.HasField("response_headers"))
            attrs = resp.attributes["envoy.filters.http.ext_proc"].fields  # where the telemetry server reads
            assert attrs["xds.node.metadata.workload"].string_value == "frontend-v1"
            assert (
                attrs["xds.node.metadata.principal"].string_value
                == "spiffe://test.local/ns/default/sa/frontend"
            )
            assert attrs["xds.listener_direction"].number_value == 1  # INBOUND: reporter=destination
            assert attrs["connection.uri_san_peer_certificate"].string_value.endswith("/sa/ingress")
            # ext_authz fails closed when its server is down
            authz.server.stop(0)
            assert get(f"{url}/hello").status_code == 403


def test_wasm_filter_adds_a_response_header(envoy: Any, tmp_path: Path) -> None:
    try:
        from envoykit.wasmbuild.build import BuildError, build_example

        module = build_example("add_header")
    except (ImportError, BuildError) as exc:  # no clang/wasi-libc here
        pytest.skip(f"cannot build the add_header example: {exc}")
    shutil.copy(module, tmp_path / "add_header.wasm")
    with Echo("backend") as app:
        mesh: dict[str, Any] = {
            "extensions": {
                "wasm": [
                    {
                        "name": "hello",
                        "file": "add_header.wasm",
                        "root_id": "add_header",
                        "configuration": "x-hello: from-wasm",
                    }
                ]
            },
            "services": [
                {"name": "backend", "workloads": [{"name": "b1", "address": f"127.0.0.1:{app.port}"}]}
            ],
            "gateways": [
                {
                    "name": "in",
                    "kind": "ingress",
                    "address": addr(),
                    "admin": addr(),
                    "extensions": {"wasm": ["hello"]},
                }
            ],
            "virtual_services": [
                {
                    "name": "in",
                    "hosts": ["*"],
                    "gateways": ["in"],
                    "http": [{"route": [{"destination": {"host": "backend"}}]}],
                }
            ],
        }
        path = write_mesh(tmp_path / "mesh.yaml", mesh)
        with control_plane(path) as cpt:
            start_nodes(envoy, cpt, "ingress~in")
            r = get(f"http://{mesh['gateways'][0]['address']}/")
            assert r.status_code == 200 and r.headers["x-hello"] == "from-wasm"
