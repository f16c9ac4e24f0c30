"""Istio's fields decide alike in ``serve`` and in ``compile``: one Envoy, the same requests to both.

Two TLS listeners on the same port (127.0.0.1 and 127.0.0.2), so ``ports``/``destination.port`` read
the same number on both: one runs the RBAC filters ``compile`` emits for the workload, the other asks
``envoykit authz serve``, which learns the workload from Envoy (labels from the node metadata through
``bootstrap_metadata_labels_key``, namespace from the listener certificate's SPIFFE ID). Policies in
other namespaces and for other selectors are present and must not apply.
"""

from __future__ import annotations

import http.client
import ssl
import time
from pathlib import Path

import httpx
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.istio import Workload
from envoykit.authz.rbac import compile_policy_dir
from envoykit.core import free_port, validate_envoy_config
from tests.authz.conftest import ext_authz_filter
from tests.authz.test_rbac_compile import tls
from tests.certs import TestCA
from tests.envoycfg import bootstrap, cluster, direct_response, http_listener, socket_address

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
    - from: [{source: {serviceAccounts: [shop/frontend]}}]
      to: [{operation: {methods: [GET], paths: ["/api/{*}/items", "/api/v1/{**}"], ports: ["PORT"]}}]
    - from: [{source: {serviceAccounts: [shop/frontend]}}]
      to: [{operation: {paths: ["/never"], ports: ["1"]}}]
    - from: [{source: {ipBlocks: ["127.0.0.0/8"], notPrincipals: ["*"]}}]
      to: [{operation: {paths: ["/public/*"]}}]
    - from: [{source: {remoteIpBlocks: ["203.0.113.0/24"], notRemoteIpBlocks: ["203.0.113.9"]}}]
      to: [{operation: {paths: ["/partner/*"]}}]
    - to: [{operation: {paths: ["/health"], notPorts: ["1"]}}]
      when:
        - {key: destination.port, values: ["PORT"]}
        - {key: destination.ip, values: ["127.0.0.0/8"], notValues: ["10.0.0.0/8"]}
    - to: [{operation: {paths: ["/ops/*"]}}]
      when:
        - {key: source.ip, values: ["127.0.0.1/32"]}
        - {key: remote.ip, notValues: ["198.51.100.0/24"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: block-legacy, namespace: istio-system}
spec:
  action: DENY
  rules:
    - to: [{operation: {paths: ["/api/legacy/{**}"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: payments}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: frontend-lockdown, namespace: shop}
spec:
  selector: {matchLabels: {app: frontend}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v2-read-only, namespace: shop}
spec:
  selector: {matchLabels: {app: backend, version: v2}}
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE, PUT]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: try-deny-api
  namespace: shop
  annotations: {istio.io/dry-run: "true"}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/api/*"]}}]}]
"""

FRONTEND = "spiffe://cluster.local/ns/shop/sa/frontend"
OTHER = "spiffe://cluster.local/ns/shop/sa/other"
BACKEND = "spiffe://cluster.local/ns/shop/sa/backend"
LABELS = {"app": "backend", "version": "v2"}

# (client identity, method, path, headers) -> expected status, the same from both listeners
CASES: list[tuple[str | None, str, str, dict[str, str], int]] = [
    (FRONTEND, "GET", "/api/x/items", {}, 200),
    (FRONTEND, "GET", "/api/x/y/items", {}, 403),
    (FRONTEND, "GET", "/api/v1/a/b", {}, 200),
    (FRONTEND, "GET", "/api/v1/", {}, 200),
    (FRONTEND, "GET", "/api/v1", {}, 403),
    (FRONTEND, "POST", "/api/x/items", {}, 403),
    (OTHER, "GET", "/api/x/items", {}, 403),
    (FRONTEND, "GET", "/api/legacy/x", {}, 403),
    (FRONTEND, "GET", "/never", {}, 403),
    (None, "GET", "/public/a", {}, 200),
    (FRONTEND, "GET", "/public/a", {}, 403),
    (None, "GET", "/partner/x", {"x-forwarded-for": "203.0.113.7"}, 200),
    (None, "GET", "/partner/x", {"x-forwarded-for": "203.0.113.9"}, 403),
    (None, "GET", "/partner/x", {"x-forwarded-for": "203.0.113.7, 10.0.0.1"}, 403),
    (None, "GET", "/partner/x", {"x-forwarded-for": "10.0.0.1, 203.0.113.7"}, 200),
    (None, "GET", "/partner/x", {}, 403),
    (None, "GET", "/health", {}, 200),
    (OTHER, "GET", "/health", {}, 200),
    (None, "DELETE", "/health", {}, 403),
    (None, "GET", "/ops/x", {}, 200),
    (None, "GET", "/ops/x", {"x-forwarded-for": "198.51.100.4"}, 403),
    (None, "GET", "/other", {}, 403),
]


def test_istio_fields_decide_alike(tmp_path: Path, envoy, authz_server) -> None:
    port = free_port()
    pol_dir = tmp_path / "policy"
    pol_dir.mkdir()
    (pol_dir / "policies.yaml").write_text(POLICIES.replace("PORT", str(port)))
    rbac = [
        MessageToDict(f, preserving_proto_field_name=True)
        for f in compile_policy_dir(load_policy(pol_dir), Workload("shop", LABELS))
    ]
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("backend", dns=["localhost"], uris=[BACKEND], server=True)
    srv = authz_server(pol_dir)
    routes = [direct_response(200, "ok")]
    hcm = {"normalize_path": True, "merge_slashes": True}
    native = http_listener(port, routes, rbac, name="native", transport_socket=tls(ca, server), hcm_extra=hcm)
    python = http_listener(
        port,
        routes,
        [ext_authz_filter(bootstrap_metadata_labels_key="labels")],
        name="python",
        transport_socket=tls(ca, server),
        hcm_extra=hcm,
    )
    python["address"] = socket_address(port, "127.0.0.2")
    cfg = bootstrap([native, python], [cluster("authz", srv.port, http2=True)])
    cfg["node"] = {"id": "sidecar~backend-v2", "cluster": "backend", "metadata": {"labels": LABELS}}
    validate_envoy_config(cfg)
    proc = envoy(cfg)

    contexts: dict[str | None, ssl.SSLContext] = {}
    for uri in (None, FRONTEND, OTHER):
        ctx = ssl.create_default_context(cafile=str(ca.path))
        ctx.check_hostname = False  # 127.0.0.2 is not in the certificate; the CA check stays
        if uri is not None:
            pair = ca.issue(uri.rsplit("/", 1)[1], uris=[uri])
            ctx.load_cert_chain(str(pair.cert), str(pair.key))
        contexts[uri] = ctx
    results = []
    for ident, method, path, headers, want in CASES:
        got = []
        for host in ("127.0.0.1", "127.0.0.2"):
            conn = http.client.HTTPSConnection(host, port, context=contexts[ident], timeout=5)
            conn.request(method, path, headers={"host": "backend", **headers})
            got.append(conn.getresponse().status)
            conn.close()
        results.append(((ident, method, path, headers), want, got))
    wrong = [r for r in results if r[2] != [r[1], r[1]]]
    assert not wrong, f"(case, expected, [native, python]): {wrong}"

    # the dry-run DENY decided in both, enforced in neither: Envoy's shadow stats and serve's metric
    api_hits = sum(1 for (_, _, p, _), _, _ in results if p.startswith("/api/"))
    shadow = {k: v for k, v in proc.stats("http.native.rbac").items() if "shadow_denied" in k}
    assert sum(shadow.values()) >= api_hits > 0, shadow
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{srv.metrics_port}/metrics").text
        if 'result="dry_run_deny",rule="shop/try-deny-api"' in text:
            break
        time.sleep(0.2)
    assert 'envoykit_authz_decisions_total{result="dry_run_deny",rule="shop/try-deny-api"}' in text
