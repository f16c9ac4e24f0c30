"""The rule API and Istio's evaluation order, through Engine.check (no network)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from envoykit.authz import Allow, Deny, Engine, EngineSettings, Request, load_policy
from envoykit.core import ConfigError


def policy(tmp_path: Path, src: str, name: str = "rules.py"):
    d = tmp_path / "p"
    d.mkdir(exist_ok=True)
    (d / name).write_text("from envoykit.authz import *\n" + src)
    return load_policy(d)


def check(pol, settings: EngineSettings | None = None, **req):
    return Engine(settings).check(pol, Request(**req))


def test_no_rules_allows(tmp_path: Path) -> None:
    v = check(policy(tmp_path, ""), path="/x")
    assert isinstance(v.decision, Allow) and v.rule == "<default>"


def test_deny_beats_allow(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@allow_rule()
def everyone(req): return True
@deny_rule(methods=["DELETE"])
def no_delete(req): return True
""",
    )
    assert isinstance(check(pol, method="GET").decision, Allow)
    v = check(pol, method="DELETE")
    assert isinstance(v.decision, Deny) and v.decision.status == 403 and v.rule == "no_delete"


def test_allow_rules_that_apply_but_do_not_match_deny(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@allow_rule(paths=["/api/*"])
def api(req): return req.headers.get("x-user") == "alice"
""",
    )
    assert isinstance(check(pol, path="/api/a", headers={"x-user": "alice"}).decision, Allow)
    v = check(pol, path="/api/a", headers={"x-user": "bob"})
    assert isinstance(v.decision, Deny) and v.rule == "<no-allow-match>"
    # The ALLOW rule does not apply outside /api/*: nothing applies, so allow.
    assert check(pol, path="/other").rule == "<default>"


def test_prematch_host_path_method_globs(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@deny_rule(hosts=["*.internal"], paths=["/admin/*"], methods=["POST"])
def d(req): return True
""",
    )
    assert isinstance(check(pol, host="db.internal:8080", path="/admin/x", method="POST").decision, Deny)
    assert isinstance(check(pol, host="db.internal", path="/admin/x", method="get").decision, Allow)
    assert isinstance(check(pol, host="db.public", path="/admin/x", method="POST").decision, Allow)
    assert isinstance(check(pol, host="db.internal", path="/public", method="POST").decision, Allow)


def test_rule_return_values(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@deny_rule(paths=["/shaped"])
def shaped(req): return deny(429, "slow down", {"retry-after": "5"})
@allow_rule(paths=["/mut"])
def mut(req): return allow({"X-Who": "me"}, remove_headers=["X-Secret"], metadata={"tier": "gold"})
@allow_rule(paths=["/explicit-deny"])
def explicit(req): return deny(418, "teapot")
""",
    )
    d = check(pol, path="/shaped").decision
    assert d == Deny(429, "slow down", {"retry-after": "5"})
    a = check(pol, path="/mut").decision
    assert isinstance(a, Allow) and a.headers == {"x-who": "me"} and a.remove_headers == ("x-secret",)
    assert a.metadata == {"tier": "gold"}
    assert check(pol, path="/explicit-deny").decision == Deny(418, "teapot")


def test_raising_rule_denies_with_failure_status(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@deny_rule()
def bug(req): return 1 / 0
""",
    )
    v = check(pol, EngineSettings(failure_status=503), path="/")
    assert v.decision == Deny(503, "authorization rule bug failed")
    assert v.error is not None and "ZeroDivisionError" in v.error


def test_overrunning_rule_is_stopped_and_denied(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@deny_rule()
def spin(req):
    while True:
        pass
""",
    )
    start = time.monotonic()
    v = check(pol, EngineSettings(rule_budget_ms=30), path="/")
    assert time.monotonic() - start < 2.0
    assert isinstance(v.decision, Deny) and v.rule == "spin" and "budget" in (v.error or "")


def test_slow_rule_that_finishes_late_still_denies(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
import time
@allow_rule()
def slow(req):
    time.sleep(0.08)
    return True
""",
    )
    v = check(pol, EngineSettings(rule_budget_ms=20), path="/")
    assert isinstance(v.decision, Deny) and "budget" in (v.error or "")


def test_dry_run_rule_and_global(tmp_path: Path) -> None:
    pol = policy(
        tmp_path,
        """
@deny_rule(dry_run=True)
def would_block(req): return True
@deny_rule(paths=["/real"])
def real(req): return True
""",
    )
    v = check(pol, path="/x")
    assert isinstance(v.decision, Allow) and v.shadow == [("would_block", "would deny 403")]
    v = check(pol, EngineSettings(dry_run=True), path="/real")
    assert isinstance(v.decision, Allow) and v.would_deny == Deny(403, "RBAC: access denied")


def test_rule_must_take_one_argument_and_be_sync(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rules.py:\d+: TypeError: rule two must take exactly one"):
        policy(tmp_path, "@allow_rule()\ndef two(a, b): return True\n")
    with pytest.raises(ConfigError, match="not async def"):
        policy(tmp_path, "@allow_rule()\nasync def a(req): return True\n")


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        policy(tmp_path, "x = 1\ndef broken(:\n")
    assert e.value.file and e.value.file.endswith("rules.py") and e.value.line == 3


def test_duplicate_rule_names_refused(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "a.py").write_text("from envoykit.authz import *\n@allow_rule()\ndef same(req): return True\n")
    (d / "b.py").write_text("from envoykit.authz import *\n@allow_rule()\ndef same(req): return True\n")
    with pytest.raises(ConfigError, match="defined twice"):
        load_policy(d)


def test_underscore_modules_are_helpers(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir()
    (d / "_helpers.py").write_text("raise RuntimeError('not loaded')\n")
    assert load_policy(d).rules == []
