"""``envoykit authz test POLICY_DIR CASES.yaml``: request fixtures → expected decisions (like ``opa test``).

Cases file::

    cases:
      - name: frontend may read
        request:
          method: GET
          path: /api/items?page=2
          host: backend
          headers: {x-user: alice}
          source_principal: spiffe://cluster.local/ns/default/sa/frontend
          source_address: 127.0.0.1
          destination_principal: spiffe://cluster.local/ns/shop/sa/backend   # scope: namespace
          destination_labels: {app: backend}          # scope: selector.matchLabels
          destination_port: 8080                      # ports, destination.port
          claims: {iss: https://issuer, sub: alice}     # stands for an already-verified JWT
        expect:
          result: allow                # allow | deny
          status: 403                  # for deny
          rule: frontend_only          # the deciding rule (optional)
          headers: {x-caller: frontend}  # upstream headers an allow must set (optional)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envoykit.authz.decisions import Allow, Deny
from envoykit.authz.engine import Engine, EngineSettings
from envoykit.authz.loader import load_policy
from envoykit.authz.request import Request
from envoykit.core.errors import ConfigError
from envoykit.core.yamlfile import load_yaml_file, validation_error_to_config_error


class CaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: str = "GET"
    path: str = "/"
    host: str = "localhost"
    headers: dict[str, str | list[str]] = Field(default_factory=dict)
    source_principal: str = ""
    destination_principal: str = ""
    destination_labels: dict[str, str] = Field(default_factory=dict)
    destination_address: str = "127.0.0.1"
    destination_port: int = 0
    source_address: str = "127.0.0.1"
    sni: str = ""
    context_extensions: dict[str, str] = Field(default_factory=dict)
    body: str = ""
    claims: dict[str, Any] | None = None


class CaseExpect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    result: Literal["allow", "deny"]
    status: int | None = None
    rule: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    body_contains: str | None = None


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    request: CaseRequest
    expect: CaseExpect


class CaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cases: list[Case]


@dataclass
class CaseResult:
    """One case's outcome; ``problems`` is empty when it passed."""

    name: str
    problems: list[str]
    rule: str
    seconds: float = 0.0


def _request(c: CaseRequest) -> Request:
    from envoykit.authz.request import Headers

    pairs: list[tuple[str, str]] = []
    for k, v in c.headers.items():
        pairs.extend((k, x) for x in (v if isinstance(v, list) else [v]))
    req = Request(
        method=c.method,
        path=c.path,
        host=c.host,
        headers=Headers.from_pairs(pairs),
        source_address=c.source_address,
        source_principal=c.source_principal,
        destination_principal=c.destination_principal,
        destination_labels=c.destination_labels,
        destination_address=c.destination_address,
        destination_port=c.destination_port,
        sni=c.sni,
        context_extensions=c.context_extensions,
        body=c.body.encode(),
    )
    return req


def _run_case(engine: Engine, policy: Any, case: Case) -> CaseResult:
    req = _request(case.request)
    # claims given: the case stands for a token that already verified (API keys are still checked)
    verdict = engine.check(policy, req, claims=case.request.claims)
    d = verdict.decision
    exp = case.expect
    problems: list[str] = []
    got = "deny" if isinstance(d, Deny) else "allow"
    if got != exp.result:
        why = f" ({d.status} {d.body!r})" if isinstance(d, Deny) else ""
        problems.append(f"expected {exp.result}, got {got}{why} by rule {verdict.rule}")
    if exp.rule is not None and verdict.rule != exp.rule:
        problems.append(f"expected rule {exp.rule}, decided by {verdict.rule}")
    if isinstance(d, Deny):
        if exp.status is not None and d.status != exp.status:
            problems.append(f"expected status {exp.status}, got {d.status}")
        if exp.body_contains is not None and exp.body_contains not in d.body:
            problems.append(f"expected body to contain {exp.body_contains!r}, got {d.body!r}")
    if isinstance(d, Allow):
        for k, v in exp.headers.items():
            if d.headers.get(k.lower()) != v:
                problems.append(f"expected upstream header {k}: {v!r}, got {d.headers.get(k.lower())!r}")
    return CaseResult(case.name, problems, verdict.rule)


def run_cases(policy_dir: str | Path, cases_file: str | Path, run: str | None = None) -> list[CaseResult]:
    """Load the policy and the cases, evaluate every case, return results in file order.

    ``run``: a regular expression; only cases whose name it matches (``re.search``) run, as
    ``opa test --run`` selects tests.

    Raises:
        ConfigError: the policy or the cases file is invalid (file, line, field), or a bad ``run``.
    """
    policy = load_policy(policy_dir)
    doc = load_yaml_file(cases_file)
    try:
        cases = CaseFile.model_validate(doc.data)
    except ValidationError as exc:
        raise validation_error_to_config_error(exc, doc, model=CaseFile) from exc
    try:
        pattern = re.compile(run) if run else None
    except re.error as exc:
        raise ConfigError(f"--run {run!r}: not a regular expression: {exc}") from exc
    engine = Engine(EngineSettings())
    results = []
    for c in cases.cases:
        if pattern is not None and not pattern.search(c.name):
            continue
        start = time.perf_counter()
        r = _run_case(engine, policy, c)
        r.seconds = time.perf_counter() - start
        results.append(r)
    return results


def results_doc(results: list[CaseResult]) -> dict[str, Any]:
    """``authz test -o json``: ``{ok, passed, failed, cases: [{name, ok, rule, problems, seconds}]}``."""
    failed = sum(1 for r in results if r.problems)
    return {
        "ok": failed == 0,
        "passed": len(results) - failed,
        "failed": failed,
        "cases": [
            {
                "name": r.name,
                "ok": not r.problems,
                "rule": r.rule,
                "problems": r.problems,
                "seconds": r.seconds,
            }
            for r in results
        ],
    }


def junit_xml(results: list[CaseResult], suite: str) -> str:
    """The results as JUnit XML (one ``testsuite`` named ``suite``, a ``failure`` per failed case),
    the report CI systems read (the shape ``opa test --format`` users feed to them)."""
    import xml.etree.ElementTree as ET

    failed = sum(1 for r in results if r.problems)
    total = sum(r.seconds for r in results)
    suites = ET.Element("testsuites", tests=str(len(results)), failures=str(failed), time=f"{total:.6f}")
    ts = ET.SubElement(
        suites, "testsuite", name=suite, tests=str(len(results)), failures=str(failed), errors="0",
        time=f"{total:.6f}",
    )  # fmt: skip
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=suite, name=r.name, time=f"{r.seconds:.6f}")
        if r.problems:
            f = ET.SubElement(tc, "failure", message=r.problems[0], type="AuthzCaseFailure")
            f.text = "\n".join(r.problems) + f"\n(decided by rule {r.rule})"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
