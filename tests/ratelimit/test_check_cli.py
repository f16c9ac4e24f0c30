"""`envoykit ratelimit check`: unlimited rules print as unlimited; `-o json|yaml` for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from envoykit.cli import main

LIMITS = """domain: web
descriptors:
  - key: a
    rate_limit: {unlimited: true}
  - key: b
    value: x
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 3}
"""


def _dir(tmp_path: Path, text: str = LIMITS) -> Path:
    d = tmp_path / "limits"
    d.mkdir()
    (d / "web.yaml").write_text(text)
    return d


def test_text_says_unlimited(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["ratelimit", "check", str(_dir(tmp_path))])
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [
        "web.a: unlimited",
        "web.b_x: unit=SECOND requests_per_unit=3 shadow_mode",
    ]


def test_json_and_yaml(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    doc = json.loads(CliRunner().invoke(main, ["ratelimit", "check", str(d), "-o", "json"]).stdout)
    assert doc["ok"] is True and doc["domains"] == ["web"]
    a, b = doc["rules"]
    assert a["key"] == "a" and a["unlimited"] is True and a["unit"] is None and a["requests_per_unit"] is None
    assert b["key"] == "b_x" and b["unit"] == "SECOND" and b["requests_per_unit"] == 3 and b["shadow_mode"]
    y = yaml.safe_load(CliRunner().invoke(main, ["ratelimit", "check", str(d), "-o", "yaml"]).stdout)
    assert y == doc


def test_json_error(tmp_path: Path) -> None:
    d = _dir(tmp_path, LIMITS.replace("rate_limit: {unit", "rate_limt: {unit"))
    r = CliRunner().invoke(main, ["ratelimit", "check", str(d), "-o", "json"])
    assert r.exit_code == 1
    err = json.loads(r.stdout)["error"]
    assert err["line"] == 8 and err["field"] == "descriptors.1.rate_limt"
    assert err["message"] == "config error, unknown key 'rate_limt' (did you mean 'rate_limit'?)"
