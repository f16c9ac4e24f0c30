"""ext_authz through a real Envoy: allow with injected headers, shaped denies, JWT, reload, fail closed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from envoykit.authz.tokens import generate_key, mint, public_jwk
from envoykit.core import free_port
from tests.authz.conftest import authz_envoy_config

POLICY = """
from envoykit.authz import allow, allow_rule, deny, deny_rule

@deny_rule(paths=["/blocked/*"])
def blocked(req):
    return deny(451, "blocked by policy", {"x-why": "legal"})

@deny_rule(paths=["/admin/*"])
def admin_needs_token(req):
    if req.identity.claims is None:
        return deny(401, "token required", {"www-authenticate": "Bearer"})

@allow_rule(paths=["/api/*", "/admin/*"])
def api_callers(req):
    if req.headers.get("x-user") == "alice" or req.identity.claims is not None:
        sub = req.identity.claims["sub"] if req.identity.claims else "alice"
        return allow(headers={"x-authz-user": sub}, remove_headers=["x-secret"])

@deny_rule(paths=["/boom"])
def boom(req):
    raise RuntimeError("rule bug")
"""


def write_policy(d: Path, jwks: dict | None = None) -> Path:
    d.mkdir(exist_ok=True)
    (d / "rules.py").write_text(POLICY)
    if jwks is not None:
        (d / "jwks.json").write_text(json.dumps(jwks))
        (d / "authn.yaml").write_text(
            "jwt:\n  - issuer: https://issuer.test\n    audiences: [mesh]\n    jwks_file: jwks.json\n"
        )
    return d


@pytest.fixture
def stack(tmp_path, envoy, echo, authz_server):
    key = generate_key("ES256")
    policy = write_policy(tmp_path / "policy", {"keys": [public_jwk(key, "k1")]})
    srv = authz_server(policy)
    port = free_port()
    e = envoy(authz_envoy_config(port, echo.port, srv.port))
    return {
        "url": f"http://127.0.0.1:{port}",
        "echo": echo,
        "srv": srv,
        "key": key,
        "policy": policy,
        "envoy": e,
    }


def test_allow_injects_and_removes_headers(stack) -> None:
    r = httpx.get(
        stack["url"] + "/api/items?x=1",
        headers={"x-user": "alice", "x-secret": "s3", "x-authz-user": "mallory"},
    )
    assert r.status_code == 200, r.text
    seen = r.json()["headers"]
    assert seen["x-authz-user"] == "alice"  # overwrote the client's forged value
    assert "x-secret" not in seen
    assert r.json()["path"] == "/api/items?x=1"


def test_no_allow_match_is_403(stack) -> None:
    r = httpx.get(stack["url"] + "/api/items", headers={"x-user": "bob"})
    assert r.status_code == 403
    assert stack["echo"].requests == []


def test_deny_shapes_status_body_headers(stack) -> None:
    r = httpx.get(stack["url"] + "/blocked/thing")
    assert r.status_code == 451
    assert r.text == "blocked by policy"
    assert r.headers["x-why"] == "legal"


def test_path_normalisation_cannot_dodge_a_deny(stack) -> None:
    r = httpx.get(stack["url"] + "/api/%2e%2e/blocked/x", headers={"x-user": "alice"})
    assert r.status_code == 451


def test_jwt_end_to_end(stack) -> None:
    url = stack["url"] + "/admin/panel"
    assert httpx.get(url).status_code == 401
    tok = mint(stack["key"], issuer="https://issuer.test", subject="carol", audience="mesh", kid="k1")
    r = httpx.get(url, headers={"authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    assert r.json()["headers"]["x-authz-user"] == "carol"
    bad_aud = mint(stack["key"], issuer="https://issuer.test", subject="carol", audience="other", kid="k1")
    r = httpx.get(url, headers={"authorization": f"Bearer {bad_aud}"})
    assert r.status_code == 401
    assert "invalid_token" in r.headers["www-authenticate"]
    r = httpx.get(url, headers={"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.!!"})
    assert r.status_code == 401
    assert r.text == "invalid token: malformed token"  # no decoder message reaches the caller


def test_raising_rule_denies_and_server_lives(stack) -> None:
    r = httpx.get(stack["url"] + "/boom")
    assert r.status_code == 403
    assert "boom" in stack["srv"].log()
    assert httpx.get(stack["url"] + "/api/x", headers={"x-user": "alice"}).status_code == 200


def test_decision_log_has_one_line_per_decision(stack) -> None:
    httpx.get(stack["url"] + "/api/one", headers={"x-user": "alice"})
    httpx.get(stack["url"] + "/api/two", headers={"x-user": "bob"})
    lines = [json.loads(x) for x in stack["srv"].log_path.with_suffix(".decisions").read_text().splitlines()]
    by_path = {x["path"]: x for x in lines}
    assert len(lines) == 2
    assert by_path["/api/one"]["result"] == "allow" and by_path["/api/one"]["rule"] == "api_callers"
    assert by_path["/api/two"]["result"] == "deny" and by_path["/api/two"]["status"] == 403
    assert by_path["/api/two"]["rule"] == "<no-allow-match>"
    assert all(x["request_id"] and x["duration_us"] > 0 for x in lines)


def _wait_for(cond, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_policy_edit_applies_and_broken_edit_changes_nothing(stack) -> None:
    url = stack["url"] + "/api/x"
    rules = stack["policy"] / "rules.py"
    assert httpx.get(url, headers={"x-user": "bob"}).status_code == 403
    rules.write_text(POLICY.replace('== "alice"', 'in ("alice", "bob")'))
    assert _wait_for(lambda: httpx.get(url, headers={"x-user": "bob"}).status_code == 200)
    rules.write_text(POLICY + "\ndef broken(:\n")
    assert _wait_for(lambda: "syntax error" in stack["srv"].log())
    assert "rules.py:" in stack["srv"].log()
    assert httpx.get(url, headers={"x-user": "bob"}).status_code == 200  # last good policy still serves


def test_authz_down_fails_closed(stack) -> None:
    url = stack["url"] + "/api/x"
    assert httpx.get(url, headers={"x-user": "alice"}).status_code == 200
    stack["srv"].stop()
    r = httpx.get(url, headers={"x-user": "alice"})
    assert r.status_code == 403
    assert len(stack["echo"].requests) == 1
