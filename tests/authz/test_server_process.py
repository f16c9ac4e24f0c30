"""The authz server as a process: drain on SIGTERM, hot reload under traffic, workers, metrics, sampling."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc

from envoykit.authz import Request
from envoykit.authz.decisionlog import DecisionLog
from envoykit.authz.decisions import Allow, Deny
from envoykit.authz.engine import Verdict
from envoykit.core import free_port
from tests.authz.conftest import authz_envoy_config

SLOW = """
import time
from envoykit.authz import allow_rule
@allow_rule()
def slow(req):
    time.sleep(float(req.headers.get("x-sleep", "0")))
    return req.headers.get("x-user") in ("alice", "bob")
"""


def check(port: int, user: str, sleep: str = "0", timeout: float = 5) -> int:
    cr = ea.CheckRequest()
    cr.attributes.request.http.path = "/"
    cr.attributes.request.http.headers["x-user"] = user
    cr.attributes.request.http.headers["x-sleep"] = sleep
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return int(ea_grpc.AuthorizationStub(ch).Check(cr, timeout=timeout).status.code)


def test_sigterm_drains_in_flight_calls(tmp_path: Path, authz_server) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(SLOW)
    srv = authz_server(pol, "--rule-budget-ms", "2000")
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(check(srv.port, "alice", "0.8")))
    t.start()
    time.sleep(0.3)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert result == [0]  # the call in flight finished with OK
    assert srv.proc.wait(10) == 0
    assert "draining" in srv.log() and "stopped" in srv.log()


def test_reload_under_traffic_drops_nothing(tmp_path: Path, envoy, echo, authz_server) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(SLOW)
    srv = authz_server(pol)
    port = free_port()
    envoy(authz_envoy_config(port, echo.port, srv.port))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client() as c:
            while not stop.is_set():
                statuses.append(c.get(f"http://127.0.0.1:{port}/", headers={"x-user": "alice"}).status_code)

    t = threading.Thread(target=load)
    t.start()
    for i in range(6):  # each edit keeps alice allowed
        (pol / "r.py").write_text(SLOW + f"\n# edit {i}\n")
        time.sleep(0.4)
    stop.set()
    t.join()
    assert len(statuses) > 20 and set(statuses) == {200}
    assert srv.log().count("config reloaded") >= 3


def test_workers_share_a_port_and_merge_metrics(tmp_path: Path, envoy, echo, authz_server) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(SLOW)
    srv = authz_server(pol, "--workers", "2", "--threads", "1")
    for _ in range(20):
        assert check(srv.port, "alice") == 0
    assert check(srv.port, "mallory") != 0
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{srv.metrics_port}/metrics").text
        if 'envoykit_authz_decisions_total{result="allow",rule="slow"} 20.0' in text:
            break
        time.sleep(0.2)
    assert 'envoykit_authz_decisions_total{result="allow",rule="slow"} 20.0' in text
    assert 'envoykit_authz_decisions_total{result="deny",rule="<no-allow-match>"} 1.0' in text


def test_metrics_endpoint_single_process(tmp_path: Path, authz_server) -> None:
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(SLOW)
    srv = authz_server(pol)
    check(srv.port, "bob")
    text = httpx.get(f"http://127.0.0.1:{srv.metrics_port}/metrics").text
    assert 'envoykit_authz_decisions_total{result="allow",rule="slow"} 1.0' in text
    assert "envoykit_authz_check_duration_seconds_bucket" in text
    assert 'envoykit_config_reloads_total{component="authz",result="success"} 1.0' in text


def test_decision_log_sampling(tmp_path: Path) -> None:
    out = tmp_path / "d.log"
    dl = DecisionLog(str(out), sample_allow=0.0)
    req = Request(path="/x")
    for _ in range(10):
        dl.record(req, Verdict(Allow(), "r"), 12.0)
    dl.record(req, Verdict(Deny(403, "no"), "r2"), 12.0)
    dl.close()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["result"] for x in lines] == ["deny"] and lines[0]["rule"] == "r2"


def _serve_again(pol: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "envoykit.cli", "authz", "serve", "--policy-dir", str(pol),
         "--address", f"127.0.0.1:{port}", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_second_server_on_a_served_port_fails_and_the_first_keeps_it(tmp_path: Path, authz_server) -> None:
    """Single-process and multi-worker servers alike: a second server is refused, whatever its mode."""
    pol = tmp_path / "p"
    pol.mkdir()
    (pol / "r.py").write_text(SLOW)
    for first_args in ([], ["--workers", "2", "--threads", "1"]):
        srv = authz_server(pol, *first_args)
        for second_args in ([], ["--workers", "2"]):
            out = _serve_again(pol, srv.port, *second_args)
            assert out.returncode == 1, (first_args, second_args, out.stderr[-2000:])
            assert f"address in use: 127.0.0.1:{srv.port}" in out.stderr, out.stderr[-2000:]
        assert [check(srv.port, "alice") for _ in range(10)] == [0] * 10
        assert srv.proc is not None and srv.proc.poll() is None
        srv.stop()
