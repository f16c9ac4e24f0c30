"""Istio's matching, case by case, on the Python path; and what compile emits for the same fields.

The same fields go through one real Envoy in test_istio_differential.py and test_rbac_compile.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from envoykit.authz import Deny, Engine, Request, load_policy
from envoykit.authz.istio import Workload
from envoykit.authz.rbac import compile_policy_dir

SHOP = "spiffe://cluster.local/ns/shop/sa/frontend"


def _policy(tmp_path: Path, text: str):
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / "p.yaml").write_text(text)
    return load_policy(d)


def _denied(policy, **req) -> bool:
    return isinstance(Engine().check(policy, Request(**req)).decision, Deny)


DENY_PATHS = """
kind: AuthorizationPolicy
metadata: {name: d}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin/{**}", "/u/{*}/keys", "/exact"]}}]}]
"""


@pytest.mark.parametrize(
    ("path", "denied"),
    [
        ("/admin/users/1", True),  # the case: {**} is not literal text
        ("/admin/", True),
        ("/admin", False),  # {**} follows a '/', as Envoy's uri_template
        ("/u/alice/keys", True),
        ("/u/alice/bob/keys", False),  # {*} is one segment
        ("/u//keys", False),  # merged: /u/keys
        ("/u/a=b/keys", False),  # '=' is outside Envoy's template characters
        ("/admin/%2e%2e/exact", True),  # encoded traversal resolves first
        ("/x/..;/admin/a", True),  # ambiguous: denied whatever the policy
        ("/x/..%3B/admin/a", True),
        ("/exact;v=1", True),  # parameters are cut off
        ("/exact/", False),
    ],
)
def test_path_templates_and_normalisation(tmp_path: Path, path: str, denied: bool) -> None:
    assert _denied(_policy(tmp_path, DENY_PATHS), path=path) is denied


CIDR = """
kind: AuthorizationPolicy
metadata: {name: c}
spec:
  action: DENY
  rules:
    - when: [{key: source.ip, values: ["10.0.0.0/8", "2001:db8::/32"]}]
    - from: [{source: {remoteIpBlocks: ["192.0.2.0/24"]}}]
    - to: [{operation: {ports: ["8443"]}}]
    - when: [{key: destination.ip, values: ["172.16.0.0/12"]}]
"""


@pytest.mark.parametrize(
    ("req", "denied"),
    [
        ({"source_address": "10.1.2.3"}, True),  # the case: a CIDR, not a string
        ({"source_address": "11.1.2.3"}, False),
        ({"source_address": "2001:db8::1"}, True),
        ({"source_address": "1.1.1.1", "headers": {"x-forwarded-for": "192.0.2.5"}}, True),
        ({"source_address": "192.0.2.5"}, True),  # no x-forwarded-for: remote.ip is the peer
        ({"source_address": "1.1.1.1", "headers": {"x-forwarded-for": "192.0.2.5, 8.8.8.8"}}, False),
        ({"source_address": "1.1.1.1", "destination_port": 8443}, True),
        ({"source_address": "1.1.1.1", "destination_port": 443}, False),
        ({"source_address": "1.1.1.1", "destination_address": "172.20.0.1"}, True),
    ],
)
def test_cidrs_and_ports(tmp_path: Path, req: dict, denied: bool) -> None:
    assert _denied(_policy(tmp_path, CIDR), **req) is denied


SCOPED = """
kind: AuthorizationPolicy
metadata: {name: lock, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules: [{}]
---
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/root]}}]}]
"""


@pytest.mark.parametrize(
    ("dest_principal", "labels", "path", "denied"),
    [
        ("spiffe://td/ns/shop/sa/x", {"app": "backend"}, "/", True),
        ("spiffe://td/ns/shop/sa/x", {"app": "frontend"}, "/", False),  # selector excludes
        ("spiffe://td/ns/other/sa/x", {"app": "backend"}, "/", False),  # namespace excludes
        ("", {"app": "backend"}, "/", True),  # namespace unknown: applies (fail closed)
        ("spiffe://td/ns/shop/sa/x", {}, "/", True),  # labels unknown: applies
        ("spiffe://td/ns/other/sa/x", {"app": "x"}, "/root", True),  # root namespace: everywhere
    ],
)
def test_namespace_and_selector_scope(tmp_path: Path, dest_principal, labels, path, denied) -> None:
    pol = _policy(tmp_path, SCOPED)
    req = {"destination_principal": dest_principal, "destination_labels": labels, "path": path}
    assert _denied(pol, **req) is denied


def test_compile_scopes_to_the_workload(tmp_path: Path) -> None:
    pol = _policy(tmp_path, SCOPED)

    def names(workload):
        out = []
        for f in compile_policy_dir(pol, workload):
            out += list(
                MessageToDict(f, preserving_proto_field_name=True)["typed_config"]["rules"]["policies"]
            )
        return sorted(out)  # a map: RBAC policies have no order

    assert names(Workload("shop", {"app": "backend"})) == [
        "envoykit-ambiguous-path",
        "istio-system/mesh-wide[0]",
        "shop/lock[0]",
    ]
    assert names(Workload("shop", {"app": "frontend"})) == [
        "envoykit-ambiguous-path",
        "istio-system/mesh-wide[0]",
    ]
    assert names(None) == ["envoykit-ambiguous-path", "istio-system/mesh-wide[0]", "shop/lock[0]"]


DRY = """
kind: AuthorizationPolicy
metadata:
  name: try
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: ["/api/*"]}}]}]
---
kind: AuthorizationPolicy
metadata:
  name: try-allow
  annotations: {istio.io/dry-run: "true"}
spec:
  rules: [{to: [{operation: {paths: ["/ok"]}}]}]
"""


def test_dry_run_annotation(tmp_path: Path) -> None:
    pol = _policy(tmp_path, DRY)
    v = Engine().check(pol, Request(path="/api/x"))
    assert not isinstance(v.decision, Deny)  # decided, never enforced
    assert ("try", "would deny 403") in v.shadow
    assert ("<dry-run-allow>", "would deny 403") in v.shadow  # no dry-run ALLOW matched
    assert ("<dry-run-allow>", "would deny 403") not in Engine().check(pol, Request(path="/ok")).shadow
    filters = [MessageToDict(f, preserving_proto_field_name=True) for f in compile_policy_dir(pol)]
    deny, allow = (f["typed_config"] for f in filters)
    assert list(deny["shadow_rules"]["policies"]) == ["try[0]"]
    assert list(deny["rules"]["policies"]) == ["envoykit-ambiguous-path"]
    assert list(allow["shadow_rules"]["policies"]) == ["try-allow[0]"] and "rules" not in allow


def test_service_accounts(tmp_path: Path) -> None:
    pol = _policy(
        tmp_path,
        "kind: AuthorizationPolicy\nmetadata: {name: sa}\nspec:\n  rules:\n"
        "    - from: [{source: {serviceAccounts: [shop/frontend]}}]\n",
    )
    assert not _denied(pol, source_principal=SHOP)
    assert _denied(pol, source_principal="spiffe://cluster.local/ns/shop/sa/other")
    assert _denied(pol, source_principal="spiffe://cluster.local/ns/other/sa/frontend")
    assert _denied(pol)
