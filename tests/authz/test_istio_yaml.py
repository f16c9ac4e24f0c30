"""The declarative AuthorizationPolicy form: Istio's matching rules, and errors with file/line/field."""

from __future__ import annotations

from pathlib import Path

import pytest

from envoykit.authz import Allow, Deny, Engine, Request, load_policy
from envoykit.core import ConfigError

POLICIES = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: backend-callers}
spec:
  action: ALLOW
  rules:
    - from:
        - source: {principals: ["cluster.local/ns/shop/sa/frontend"]}
      to:
        - operation: {methods: [GET, POST], paths: ["/api/*"]}
    - from:
        - source: {requestPrincipals: ["https://issuer.test/*"]}
      when:
        - key: request.auth.claims[groups]
          values: [admins]
---
kind: AuthorizationPolicy
metadata: {name: no-debug}
spec:
  action: DENY
  rules:
    - to:
        - operation: {paths: ["/debug*"], notMethods: [OPTIONS]}
    - from:
        - source: {ipBlocks: ["192.0.2.0/24"]}
"""


@pytest.fixture
def pol(tmp_path: Path):
    d = tmp_path / "p"
    d.mkdir()
    (d / "policies.yaml").write_text(POLICIES)
    return load_policy(d)


def decide(pol, req: Request, claims: dict | None = None):
    if claims is not None:
        req.identity.claims = claims
        req.identity.request_principal = f"{claims['iss']}/{claims['sub']}"
        pol.authenticator.config = pol.authenticator.config  # no token in the request: authn is a no-op
    return Engine().check(pol, req)


def test_principal_with_or_without_spiffe_scheme(pol) -> None:
    ok = Request(method="GET", path="/api/x", source_principal="spiffe://cluster.local/ns/shop/sa/frontend")
    assert isinstance(decide(pol, ok).decision, Allow)
    wrong_sa = Request(
        method="GET", path="/api/x", source_principal="spiffe://cluster.local/ns/shop/sa/other"
    )
    assert isinstance(decide(pol, wrong_sa).decision, Deny)
    wrong_method = Request(
        method="DELETE", path="/api/x", source_principal="spiffe://cluster.local/ns/shop/sa/frontend"
    )
    assert isinstance(decide(pol, wrong_method).decision, Deny)


def test_claims_condition(pol) -> None:
    claims = {"iss": "https://issuer.test", "sub": "ann", "groups": ["admins", "dev"]}
    assert isinstance(decide(pol, Request(path="/anything"), claims).decision, Allow)
    claims = {"iss": "https://issuer.test", "sub": "bob", "groups": ["dev"]}
    assert isinstance(decide(pol, Request(path="/anything"), claims).decision, Deny)


def test_deny_policy_not_methods_and_ip_blocks(pol) -> None:
    fe = "spiffe://cluster.local/ns/shop/sa/frontend"
    v = decide(pol, Request(method="GET", path="/debug/vars", source_principal=fe))
    assert isinstance(v.decision, Deny) and v.rule == "no-debug"
    v = decide(pol, Request(method="GET", path="/api/x", source_principal=fe, source_address="192.0.2.44"))
    assert isinstance(v.decision, Deny) and v.rule == "no-debug"


def test_allow_nothing_and_allow_all(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.yaml").write_text("kind: AuthorizationPolicy\nmetadata: {name: nothing}\nspec: {action: ALLOW}\n")
    assert isinstance(Engine().check(load_policy(d), Request()).decision, Deny)
    (d / "a.yaml").write_text("kind: AuthorizationPolicy\nmetadata: {name: all}\nspec: {rules: [{}]}\n")
    assert isinstance(Engine().check(load_policy(d), Request()).decision, Allow)


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "bad.yaml").write_text(POLICIES.replace('ipBlocks: ["192.0.2.0/24"]', 'ipBlocks: ["300.1.1.1/8"]'))
    with pytest.raises(ConfigError) as e:
        load_policy(d)
    assert e.value.file.endswith("bad.yaml") and e.value.line == 26  # type: ignore[union-attr]
    assert "spec.rules.1.from.0.source.ipBlocks" in str(e.value)
    (d / "bad.yaml").write_text("kind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  action: CUSTOM\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: spec.action: .*CUSTOM .*Python rule"):
        load_policy(d)
    (d / "bad.yaml").write_text("kind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  action: AUDIT\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: spec.action: .*AUDIT needs an audit plugin"):
        load_policy(d)
    (d / "bad.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  rules:\n  - to:\n    - operation: {ports: ['http']}\n"
    )
    with pytest.raises(
        ConfigError, match=r"bad.yaml:6: spec.rules.0.to.0.operation.ports: .*not a port number"
    ):
        load_policy(d)
    (d / "bad.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  rules:\n  - to:\n"
        "    - operation: {paths: ['/a/{**}/{*}']}\n"
    )
    with pytest.raises(ConfigError, match=r"\{\*\*\} must be the last operator"):
        load_policy(d)
    (d / "bad.yaml").write_text(
        "kind: AuthorizationPolicy\nmetadata: {name: x}\nspec:\n  rules:\n  - when:\n"
        "    - {key: source.ip, values: [frontend]}\n"
    )
    with pytest.raises(ConfigError, match=r"'frontend' is not an IP address or CIDR block"):
        load_policy(d)
