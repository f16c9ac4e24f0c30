"""Declarative policies compiled to Envoy's native RBAC decide exactly as the Python path.

One Envoy, two TLS listeners with the same routes: one enforces the compiled RBAC filters, the other
asks ``envoykit authz serve`` with the same policy directory. Every case goes to both.
"""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.rbac import NotCompilable, compile_policy_dir
from envoykit.core import free_port, validate_envoy_config
from tests.authz.conftest import ext_authz_filter
from tests.certs import TestCA
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener

POLICY = """
kind: AuthorizationPolicy
metadata: {name: frontend-api}
spec:
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
      to: [{operation: {methods: [GET, POST], paths: ["/api/*"]}}]
---
kind: AuthorizationPolicy
metadata: {name: ops-metrics}
spec:
  rules:
    - from: [{source: {namespaces: [ops]}}]
      to: [{operation: {paths: [/metrics]}}]
---
kind: AuthorizationPolicy
metadata: {name: public-host}
spec:
  rules:
    - to: [{operation: {hosts: ["public.example", "*.open.example"]}}]
---
kind: AuthorizationPolicy
metadata: {name: canary-header}
spec:
  rules:
    - to: [{operation: {paths: ["/canary*"]}}]
      when: [{key: "request.headers[x-canary]", values: ["yes"]}]
---
kind: AuthorizationPolicy
metadata: {name: no-debug}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/debug*"], notMethods: [OPTIONS]}}]
    - from: [{source: {ipBlocks: [127.0.0.1/32]}}]
      to: [{operation: {paths: [/blocked-local]}}]
    - from: [{source: {notPrincipals: ["*"]}}]
      to: [{operation: {paths: ["/api/private*"]}}]
---
kind: AuthorizationPolicy
metadata: {name: v1-open}
spec:
  rules:
    - to: [{operation: {paths: ["/v1/*"]}}]
---
kind: AuthorizationPolicy
metadata: {name: no-internal}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/internal/{**}", "/v1/{*}/secret", "*.bak", "/exact", "/t/{*}/{**}"]}}]
---
kind: AuthorizationPolicy
metadata: {name: shadow-everything}
spec:
  action: DENY
  dryRun: true
  rules: [{}]
"""

IDENTITIES = {
    "frontend": "spiffe://cluster.local/ns/shop/sa/frontend",
    "other": "spiffe://cluster.local/ns/shop/sa/other",
    "ops": "spiffe://cluster.local/ns/ops/sa/agent",
    "foreign": "spiffe://evil.example/ns/shop/sa/frontend",
}

CASES = [
    # (identity or None, method, path, host, headers)
    ("frontend", "GET", "/api/items", "svc", {}),
    ("frontend", "DELETE", "/api/items", "svc", {}),
    ("frontend", "GET", "/other", "svc", {}),
    ("other", "GET", "/api/items", "svc", {}),
    ("foreign", "GET", "/api/items", "svc", {}),
    (None, "GET", "/api/items", "svc", {}),
    ("ops", "GET", "/metrics", "svc", {}),
    ("ops", "GET", "/metrics/x", "svc", {}),
    ("frontend", "GET", "/metrics", "svc", {}),
    (None, "GET", "/anything", "public.example", {}),
    (None, "GET", "/anything", "PUBLIC.example:443", {}),
    (None, "GET", "/anything", "a.open.example", {}),
    (None, "GET", "/anything", "open.example", {}),
    (None, "GET", "/canary/v2", "svc", {"x-canary": "yes"}),
    (None, "GET", "/canary/v2", "svc", {"x-canary": "no"}),
    ("frontend", "GET", "/debug/vars", "public.example", {}),
    ("frontend", "OPTIONS", "/debug/vars", "public.example", {}),
    (None, "GET", "/blocked-local", "public.example", {}),
    (None, "GET", "/api/private/x", "public.example", {}),
    ("frontend", "GET", "/api/private/x", "svc", {}),
    ("frontend", "GET", "/api/../other", "svc", {}),
    ("frontend", "GET", "/api//items", "svc", {}),
    # one normalised path: ';' parameters, encoded and plain traversal, escaped slashes, templates
    (None, "GET", "/v1/items", "svc", {}),
    (None, "GET", "/v1/items;jsessionid=1", "svc", {}),
    (None, "GET", "/v1/..;/internal/x", "svc", {}),
    (None, "GET", "/v1/..%3B/internal/x", "svc", {}),
    (None, "GET", "/v1/..%3b/internal/x", "public.example", {}),
    (None, "GET", "/v1/%2e%2e;/internal/x", "public.example", {}),
    (None, "GET", "/v1/.;x/a", "public.example", {}),
    (None, "GET", "/v1/;x/a", "public.example", {}),
    (None, "GET", "/v1/%2e%2e/internal/x", "public.example", {}),
    (None, "GET", "/v1/x%2F..%2F..%2Finternal/y", "public.example", {}),
    (None, "GET", "/v1/x%5C..%5Cinternal", "public.example", {}),
    (None, "GET", "/v1/a/secret", "svc", {}),
    (None, "GET", "/v1/a;x=1/secret;y", "svc", {}),
    (None, "GET", "/v1/a/b/secret", "svc", {}),
    (None, "GET", "/v1/a=b/secret", "svc", {}),
    (None, "GET", "/v1//a//secret", "svc", {}),
    (None, "GET", "/internal", "public.example", {}),
    (None, "GET", "/internal/", "public.example", {}),
    (None, "GET", "/internal/a/b", "public.example", {}),
    (None, "GET", "/internal;p/a", "public.example", {}),
    (None, "GET", "/v1/x.bak", "svc", {}),
    (None, "GET", "/v1/x.bak;v=1", "svc", {}),
    (None, "GET", "/v1/x;v.bak", "svc", {}),
    (None, "GET", "/exact;p", "public.example", {}),
    (None, "GET", "/exact/", "public.example", {}),
    (None, "GET", "/t/a", "public.example", {}),
    (None, "GET", "/t/a/", "public.example", {}),
    (None, "GET", "/t/a/b/c", "public.example", {}),
    (None, "GET", "/%76%31/items?x=/../internal/", "svc", {}),
]


def tls(ca: TestCA, server) -> dict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(server.cert)},
                        "private_key": {"filename": str(server.key)},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": str(ca.path)}},
            },
        },
    }


HCM = {
    "normalize_path": True,
    "merge_slashes": True,
    "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
}


def test_refuses_what_needs_python(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: jwt}\nspec:\n  rules:\n"
        "    - from: [{source: {requestPrincipals: ['*']}}]\n"
    )
    with pytest.raises(NotCompilable, match=r"a.yaml:5: spec.rules.0.from.0.source: requestPrincipals"):
        compile_policy_dir(load_policy(d))
    (d / "a.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: claims}\nspec:\n  rules:\n    - to: [{operation: {paths: [/x]}}]\n"
        "      when:\n        - key: 'request.auth.claims[groups]'\n          values: [admins]\n"
    )
    with pytest.raises(NotCompilable, match=r"a.yaml:7: spec.rules.0.when.0: condition request.auth.claims"):
        compile_policy_dir(load_policy(d))
    (d / "a.yaml").unlink()
    (d / "r.py").write_text("from envoykit.authz import *\n@allow_rule()\ndef r(req): return True\n")
    with pytest.raises(NotCompilable, match=r"r.py:2: Python rule r"):
        compile_policy_dir(load_policy(d))


def test_compiled_rbac_decides_like_python(tmp_path: Path, envoy, authz_server) -> None:
    pol_dir = tmp_path / "policy"
    pol_dir.mkdir()
    (pol_dir / "policy.yaml").write_text(POLICY)
    rbac = [
        MessageToDict(f, preserving_proto_field_name=True) for f in compile_policy_dir(load_policy(pol_dir))
    ]
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("server", dns=["localhost"], server=True)
    srv = authz_server(pol_dir)
    native, python = free_port(), free_port()
    routes = [direct_response(200, "ok")]
    cfg = bootstrap(
        [
            http_listener(
                native, routes, rbac, name="native", transport_socket=tls(ca, server), hcm_extra=HCM
            ),
            http_listener(
                python,
                routes,
                [ext_authz_filter()],
                name="python",
                transport_socket=tls(ca, server),
                hcm_extra=HCM,
            ),
        ],
        [cluster("authz", srv.port, http2=True)],
    )
    validate_envoy_config(cfg)
    envoy(cfg)
    contexts: dict[str | None, ssl.SSLContext] = {}
    for name, uri in [(None, None), *IDENTITIES.items()]:
        ctx = ssl.create_default_context(cafile=str(ca.path))
        if name is not None and uri is not None:
            pair = ca.issue(name, uris=[uri])
            ctx.load_cert_chain(str(pair.cert), str(pair.key))
        contexts[name] = ctx
    outcomes = []
    for ident, method, path, host, headers in CASES:
        got = []
        for port in (native, python):
            # http.client sends the target as written (httpx would resolve dot segments itself)
            conn = http.client.HTTPSConnection("localhost", port, context=contexts[ident], timeout=5)
            conn.request(method, path, headers={"host": host, **headers})
            got.append(conn.getresponse().status)
            conn.close()
        outcomes.append(((ident, method, path, host), got))
    differ = [o for o in outcomes if o[1][0] != o[1][1]]
    assert not differ, f"native RBAC and the Python path disagree: {differ}"
    statuses = [o[1][0] for o in outcomes]
    assert statuses.count(200) >= 7 and statuses.count(403) >= 7, outcomes
    by_route = {(p, h): o[0] for (_, _, p, h), o in outcomes}
    assert dict(outcomes)[("frontend", "GET", "/api/items", "svc")] == [200, 200]
    assert dict(outcomes)[("frontend", "GET", "/debug/vars", "public.example")] == [403, 403]
    want = {
        ("/v1/items;jsessionid=1", "svc"): 200,
        ("/v1/..;/internal/x", "svc"): 403,
        ("/v1/..%3B/internal/x", "svc"): 403,
        ("/v1/%2e%2e;/internal/x", "public.example"): 403,
        ("/v1/x%2F..%2F..%2Finternal/y", "public.example"): 403,
        ("/v1/a;x=1/secret;y", "svc"): 403,
        ("/v1/a/b/secret", "svc"): 200,
        ("/internal", "public.example"): 200,
        ("/internal/a/b", "public.example"): 403,
        ("/internal;p/a", "public.example"): 403,
        ("/v1/x.bak;v=1", "svc"): 403,
        ("/v1/x;v.bak", "svc"): 200,
        ("/t/a", "public.example"): 200,
        ("/t/a/b/c", "public.example"): 403,
        ("/%76%31/items?x=/../internal/", "svc"): 200,
    }
    assert {k: by_route[k] for k in want} == want


@pytest.mark.envoy
def test_shipped_example_compiles_and_validates(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    filters = [
        MessageToDict(f, preserving_proto_field_name=True)
        for f in compile_policy_dir(load_policy(root / "examples/rbac"))
    ]
    assert [f["name"] for f in filters] == ["envoy.filters.http.rbac.deny", "envoy.filters.http.rbac.allow"]
    validate_envoy_config(bootstrap([http_listener(free_port(), [direct_response(200, "ok")], filters)], []))
