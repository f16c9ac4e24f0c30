"""The real-world shaped AuthorizationPolicies in examples/istio load, decide their cases, and compile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from envoykit.authz import load_policy
from envoykit.authz.istio import Workload
from envoykit.authz.rbac import NotCompilable, compile_policies
from envoykit.core import free_port, validate_envoy_config
from tests.envoycfg import bootstrap, direct_response, http_listener

ROOT = Path(__file__).resolve().parents[2]


def test_cases_pass() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "envoykit.cli",
            "authz",
            "test",
            "examples/istio",
            "examples/istio-cases.yaml",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "26 passed, 0 failed" in r.stdout


@pytest.mark.parametrize(
    "workload",
    [
        Workload("bookinfo", {"app": "productpage"}),
        Workload("bookinfo", {"app": "ratings"}),
        Workload("istio-system", {"istio": "ingressgateway"}),
        Workload("tools", {"app": "tools"}),
        None,
    ],
)
@pytest.mark.envoy
def test_compile_for_each_workload_validates(workload: Workload | None) -> None:
    policy = load_policy(ROOT / "examples/istio")
    declarative = [(p, d) for p, d in policy.yaml_policies if not d.path.endswith("jwt.yaml")]
    filters = [
        MessageToDict(f, preserving_proto_field_name=True) for f in compile_policies(declarative, workload)
    ]
    validate_envoy_config(bootstrap([http_listener(free_port(), [direct_response(200, "ok")], filters)], []))


def test_jwt_policies_are_refused_by_compile_with_the_line() -> None:
    policy = load_policy(ROOT / "examples/istio")
    jwt = [(p, d) for p, d in policy.yaml_policies if d.path.endswith("jwt.yaml")]
    with pytest.raises(NotCompilable, match=r"jwt.yaml:\d+: spec.rules.0.from.0.source: requestPrincipals"):
        compile_policies(jwt, Workload("shop", {"app": "orders"}))
