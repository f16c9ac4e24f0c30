"""``envoykit wasm run|diff|build`` and the cases-file validation."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from envoykit.cli import main
from envoykit.wasmdiff import CasesError, parse_cases
from tests.wasmhost.conftest import CASES


def test_run_prints_what_the_filter_did(wasm_example) -> None:
    wasm = wasm_example("deny")
    args = ["wasm", "run", str(wasm), "--root-id", "deny", "--config", "x-deny", "-H", "x-deny: 1", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["upstream_request"] is None
    assert out["local_response"] == {"status": 403, "details": "denied_by_header"}
    assert out["response"]["body"] == "denied by wasm\n"
    assert out["logs"][0] == ["warn", "deny: /"]
    assert out["actions"][0] == ["proxy_on_request_headers", 1]


def test_run_text_output_with_callout(wasm_example) -> None:
    wasm = wasm_example("callout")
    args = ["wasm", "run", str(wasm), "--root-id", "callout", "--config", "auth", "--callout", "auth=200:tok",
            "--request", "POST /x", "--body", "hi", "--upstream-body", "done"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "x-auth: tok" in result.output
    assert "response: 200" in result.output and "b'done'" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--request", "GET"], "is not 'METHOD /path'"),
        (["-H", "no-colon"], "is not 'name: value'"),
        (["--callout", "auth"], "is not CLUSTER=STATUS"),
    ],
)
def test_run_bad_input(wasm_example, extra, message) -> None:
    result = CliRunner().invoke(main, ["wasm", "run", str(wasm_example("add_header")), *extra])
    assert result.exit_code == 2
    assert message in result.output


def test_run_reports_a_failing_filter(tmp_path) -> None:
    from tests.wasmhost.conftest import WAT

    result = CliRunner().invoke(main, ["wasm", "run", str(WAT / "limits.wat"), "--request", "GET /trap"])
    assert result.exit_code == 1
    assert "filter failed: proxy_on_request_headers (context 2) trapped: wasm `unreachable`" in result.output
    assert "local response: 503 (wasm_fail_stream)" in result.output and "response: 503" in result.output


@pytest.mark.envoy
def test_diff_command_exit_codes(wasm_example, monkeypatch):
    wasm, cases = str(wasm_example("add_header")), str(CASES / "add_header.yaml")
    ok = CliRunner().invoke(main, ["wasm", "diff", wasm, cases, "-v"])
    assert ok.exit_code == 0, ok.output
    assert "3/3 cases identical" in ok.output and "same      GET gets the headers: 200" in ok.output

    # A host that gets one thing wrong must be caught: falsify the host's status on one case.
    import envoykit.wasmdiff.host_side as host_side

    real = host_side.observe

    def wrong(outcome):
        obs = real(outcome)
        if obs.upstream and obs.upstream[1] == "/z":
            obs.status = 500
        return obs

    monkeypatch.setattr(host_side, "observe", wrong)
    bad = CliRunner().invoke(main, ["wasm", "diff", wasm, cases])
    assert bad.exit_code == 1
    assert "2/3 cases identical" in bad.output
    assert "status: host 500 != envoy 404" in bad.output


def test_diff_command_bad_cases_file(wasm_example, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("root_id: x\ncases:\n  - request: {path: nope}\n")
    result = CliRunner().invoke(main, ["wasm", "diff", str(wasm_example("add_header")), str(bad)])
    assert result.exit_code == 1
    assert "cases.0.request.path: must start with '/'" in result.output


def test_build_command_lists_paths(wasm_example) -> None:
    result = CliRunner().invoke(main, ["wasm", "build", "add_header", "wat_logging"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split("\t") for line in result.output.splitlines())
    assert lines["add_header"].endswith(".wasm") and lines["wat_logging"].endswith(".wasm")
    bad = CliRunner().invoke(main, ["wasm", "build", "nope"])
    assert bad.exit_code == 1 and "no example 'nope'" in bad.output


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the document must be a mapping"),
        ({"cases": []}, "cases: expected a non-empty list"),
        ({"cases": [{"request": {}}], "bogus": 1}, "unknown field(s) ['bogus']"),
        ({"cases": [{"upstream": {"status": 42}}]}, "cases.0.upstream.status: must be an HTTP status"),
        ({"cases": [{"request": {"headers": "x"}}]}, "cases.0.request.headers: headers must be a mapping"),
        ({"cases": [{}], "log_level": "loud"}, "log_level: one of"),
        ({"cases": [{}], "clusters": [1]}, "clusters: expected a mapping"),
        ({"cases": [{"upstream": {"delay_ms": 5}}]}, "cases.0.upstream: unknown field(s) ['delay_ms']"),
        ({"cases": [{}], "clusters": {"a": {"delay_ms": -1}}}, "clusters.a.delay_ms: milliseconds 0..10000"),
        ({"cases": [{}], "failure_policy": "FAIL_SOMETIMES"}, "failure_policy: FAIL_CLOSED, FAIL_OPEN or"),
        ({"cases": [{}], "reload_backoff_ms": 100}, "reload_backoff_ms: milliseconds 2..20 or 500..10000"),
        ({"cases": [{"wait_ms": -5}]}, "cases.0.wait_ms: milliseconds 0..30000"),
        (
            {"protocol": "tcp", "cases": [{"messages": ["a"], "wait_ms": "1s"}]},
            "cases.0.wait_ms: milliseconds",
        ),
        (
            {"cases": [{}], "before": {"lua": {}}},
            "before: expected a mapping with add_request_headers and/or",
        ),
        ({"cases": [{}], "before": {"buffer": "yes"}}, "before.buffer: true or false"),
    ],
)
def test_cases_validation_names_the_field(doc, message) -> None:
    with pytest.raises(CasesError) as err:
        parse_cases(doc, "f.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("f.yaml")


def test_cases_defaults_and_repeated_headers() -> None:
    cf = parse_cases({"cases": [{"request": {"headers": [["x-r", 1], ["X-R", 2]], "body": "b"}}]})
    case = cf.cases[0]
    assert case.request.headers == [("x-r", "1"), ("x-r", "2")]
    assert (case.request.method, case.request.path, case.upstream.status) == ("GET", "/", 200)
