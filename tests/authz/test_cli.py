"""``envoykit authz test`` (request fixtures → expected decisions) and ``envoykit token``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt

CASES = """
cases:
  - name: alice reads
    request: {method: GET, path: /api/items, headers: {x-user: alice}}
    expect: {result: allow, rule: api, headers: {x-caller: alice}}
  - name: bob is refused
    request: {path: /api/items, headers: {x-user: bob}}
    expect: {result: deny, status: 403}
  - name: admins by claim
    request: {path: /admin, claims: {iss: https://i, sub: ann, role: admin}}
    expect: {result: allow}
"""

RULES = """
from envoykit.authz import *
@allow_rule(paths=["/api/*"])
def api(req):
    if req.headers.get("x-user") == "alice":
        return allow({"x-caller": "alice"})
@allow_rule(paths=["/admin"])
def admin(req):
    return req.identity.claim("role") == "admin"
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envoykit.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_authz_test_passes_and_fails(tmp_path: Path) -> None:
    pol = tmp_path / "policy"
    pol.mkdir()
    (pol / "rules.py").write_text(RULES)
    cases = tmp_path / "cases.yaml"
    cases.write_text(CASES)
    r = run("authz", "test", str(pol), str(cases))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 passed, 0 failed" in r.stdout
    cases.write_text(CASES.replace("{result: deny, status: 403}", "{result: allow}"))
    r = run("authz", "test", str(pol), str(cases))
    assert r.returncode == 1
    assert "FAIL bob is refused" in r.stdout and "expected allow, got deny (403" in r.stdout
    assert "2 passed, 1 failed" in r.stdout


def test_authz_test_prints_brackets_as_text(tmp_path: Path) -> None:
    pol = tmp_path / "policy"
    pol.mkdir()
    (pol / "rules.py").write_text(RULES)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        CASES.replace("alice reads", "'[admin] alice reads [/]'")
        .replace("bob is refused", "'bob [bold]x[/bold] refused'")
        .replace("{result: deny, status: 403}", "{result: allow}")
    )
    r = run("authz", "test", str(pol), str(cases))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "PASS [admin] alice reads [/]" in r.stdout
    assert "FAIL bob [bold]x[/bold] refused" in r.stdout


def test_authz_test_reports_bad_cases_file(tmp_path: Path) -> None:
    pol = tmp_path / "policy"
    pol.mkdir()
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - name: x\n    request: {}\n    expect: {result: maybe}\n")
    r = run("authz", "test", str(pol), str(cases))
    assert r.returncode == 1 and "cases.yaml:4: cases.0.expect.result" in r.stderr


def test_token_command(tmp_path: Path) -> None:
    from envoykit.authz.tokens import generate_key, key_pem

    key = generate_key("RS256")
    (tmp_path / "k.pem").write_bytes(key_pem(key))
    r = run(
        "token", "--key", str(tmp_path / "k.pem"), "--sub", "ann", "--claim", 'groups=["a"]', "--ttl", "60"
    )
    assert r.returncode == 0, r.stderr
    claims = jwt.decode(r.stdout.strip(), key.public_key(), algorithms=["RS256"], audience="envoykit-mesh")
    assert claims["sub"] == "ann" and claims["groups"] == ["a"] and claims["exp"] - claims["iat"] == 60


def test_example_policy_cases_pass() -> None:
    root = Path(__file__).resolve().parents[2]
    r = run("authz", "test", str(root / "examples/policies"), str(root / "examples/authz-cases.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
