"""``envoykit authz test`` for scripts and CI: ``-o json|yaml``, ``-o junit``, ``--run PATTERN``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.authz.test_cli import CASES, RULES, run


def _setup(tmp_path: Path, cases: str = CASES) -> tuple[Path, Path]:
    pol = tmp_path / "policy"
    pol.mkdir()
    (pol / "rules.py").write_text(RULES)
    f = tmp_path / "cases.yaml"
    f.write_text(cases)
    return pol, f


def test_json_yaml_and_run_pattern(tmp_path: Path) -> None:
    pol, cases = _setup(tmp_path, CASES.replace("{result: deny, status: 403}", "{result: allow}"))
    r = run("authz", "test", str(pol), str(cases), "-o", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert (doc["ok"], doc["passed"], doc["failed"]) == (False, 2, 1)
    bob = next(c for c in doc["cases"] if c["name"] == "bob is refused")
    assert bob["ok"] is False and bob["problems"][0].startswith("expected allow, got deny (403")
    assert yaml.safe_load(run("authz", "test", str(pol), str(cases), "-o", "yaml").stdout)["failed"] == 1
    only = run("authz", "test", str(pol), str(cases), "--run", "^a", "-o", "json")
    assert only.returncode == 0  # bob's failing case did not run
    assert [c["name"] for c in json.loads(only.stdout)["cases"]] == ["alice reads", "admins by claim"]
    bad = run("authz", "test", str(pol), str(cases), "--run", "(")
    assert bad.returncode == 1 and "not a regular expression" in bad.stderr


def test_junit_xml(tmp_path: Path) -> None:
    pol, cases = _setup(tmp_path, CASES.replace("{result: deny, status: 403}", "{result: allow}"))
    r = run("authz", "test", str(pol), str(cases), "-o", "junit")
    assert r.returncode == 1
    root = ET.fromstring(r.stdout)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    failures = {tc.get("name"): tc.find("failure") for tc in suite.iter("testcase")}
    assert failures["alice reads"] is None
    f = failures["bob is refused"]
    assert f is not None and "expected allow, got deny" in (f.get("message") or "")


def test_json_error(tmp_path: Path) -> None:
    pol, cases = _setup(tmp_path, "cases:\n  - name: x\n    request: {}\n    expext: {result: deny}\n")
    r = run("authz", "test", str(pol), str(cases), "-o", "json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["line"] == 4 and err["message"].startswith("unknown field 'expext' (did you mean 'expect'?)")
