"""Through a real Envoy: 429 with headers, shadow mode, live config edits, the ready envoy/ratelimit.yaml."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from envoykit.core import free_port, validate_envoy_config
from tests.ratelimit.rlproc import envoy_config

pytestmark = pytest.mark.envoy

REPO = Path(__file__).resolve().parents[2]

LIMITS = """
domain: web
descriptors:
  - key: client
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: client
    value: vip
    rate_limit: {unlimited: true}
"""


def _config_dir(tmp_path: Path, text: str = LIMITS) -> Path:
    d = tmp_path / "limits"
    d.mkdir(exist_ok=True)
    (d / "web.yaml").write_text(text)
    return d


def _get(port: int, client: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/x", headers={"x-client": client}, timeout=10)


def _same_hour(fn: Callable[[], None]) -> None:
    """Run ``fn``; run it once more if an hour boundary (a new window) fell inside it."""
    for _ in range(2):
        hour = int(time.time()) // 3600
        try:
            fn()
            return
        except AssertionError:
            if int(time.time()) // 3600 == hour:
                raise


def test_nth_plus_one_request_gets_429_with_headers(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    rl = ratelimit(_config_dir(tmp_path), "--response-headers")
    port = free_port()
    envoy(envoy_config([(port, False)], [rl.port], echo.port))

    def run() -> None:
        client = f"c{time.monotonic_ns()}"
        got = [_get(port, client) for _ in range(4)]
        assert [r.status_code for r in got] == [200, 200, 200, 429]
        assert [r.headers["ratelimit-remaining"] for r in got] == ["2", "1", "0", "0"]
        assert all(r.headers["ratelimit-limit"] == "3" for r in got)
        reset = int(got[3].headers["ratelimit-reset"])
        assert 0 < reset <= 3600
        assert got[3].headers.get("x-envoy-ratelimited") == "true"

    _same_hour(run)
    assert [_get(port, "vip").status_code for _ in range(5)] == [200] * 5  # unlimited
    assert _get(port, "other").status_code == 200  # its own counter
    metrics = rl.metrics()
    assert 'envoykit_ratelimit_over_limit_total{domain="web",key="client"}' in metrics


def test_shadow_mode_never_429s(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    rl = ratelimit(_config_dir(tmp_path), "--shadow-mode")
    port = free_port()
    envoy(envoy_config([(port, True)], [rl.port], echo.port))
    assert [_get(port, "s").status_code for _ in range(6)] == [200] * 6
    assert "envoykit_ratelimit_global_shadow_mode_total 3.0" in rl.metrics()


def test_config_edit_applies_without_restart(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    cfg_dir = _config_dir(tmp_path)
    rl = ratelimit(cfg_dir)
    port = free_port()
    envoy(envoy_config([(port, False)], [rl.port], echo.port))
    assert _get(port, "vip").status_code == 200

    def wait_for(pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{rl.log()[-3000:]}")

    # tighten: vip loses its exemption and gets 1 per hour
    (cfg_dir / "web.yaml").write_text(
        LIMITS.replace("{unlimited: true}", "{unit: hour, requests_per_unit: 1}")
    )
    wait_for(lambda: _get(port, "vip").status_code == 429, "the edited limit to apply")
    # a broken file is refused; the last good config keeps serving
    (cfg_dir / "web.yaml").write_text(
        "domain: web\ndescriptors:\n  - key: client\n    rate_limit: {unit: fortnight}\n"
    )
    wait_for(lambda: "config refused" in rl.log(), "the bad file to be refused")
    assert "web.yaml:4: descriptors.0.rate_limit.unit: invalid rate limit unit 'fortnight'" in rl.log()
    assert _get(port, "vip").status_code == 429
    assert 'envoykit_config_last_load_ok{component="ratelimit"} 0.0' in rl.metrics()


def test_bad_config_stops_startup(tmp_path: Path) -> None:
    import subprocess

    from tests.ratelimit.rlproc import ENVOYKIT

    d = _config_dir(tmp_path, "domain: web\ndescriptors:\n  - value: x\n")
    out = subprocess.run(
        [ENVOYKIT, "ratelimit", "serve", "--config-dir", str(d), "--address", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "web.yaml:3: descriptors.0: descriptor has empty key" in out.stderr


def test_check_command_prints_tree(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from envoykit.ratelimit.cli import ratelimit as group

    res = CliRunner().invoke(group, ["check", str(_config_dir(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "web.client: unit=HOUR requests_per_unit=3" in res.output
    assert "web.client_vip: unlimited\n" in res.output  # not "unit=UNKNOWN requests_per_unit=0"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.yaml").write_text("domain: d\ndescriptors:\n  - key: k\n    ratelimit: {}\n")
    res = CliRunner().invoke(group, ["check", str(bad)])
    assert res.exit_code == 1
    assert "b.yaml:4: descriptors.0.ratelimit: config error, unknown key 'ratelimit'" in res.output


def test_ready_envoy_config_validates() -> None:
    assert "OK" in validate_envoy_config(REPO / "envoy" / "ratelimit.yaml")


def test_health_reflection_and_drain(tmp_path: Path, ratelimit) -> None:  # type: ignore[no-untyped-def]
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    rl = ratelimit(_config_dir(tmp_path))
    with grpc.insecure_channel(f"127.0.0.1:{rl.port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", "envoy.service.ratelimit.v3.RateLimitService"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert rl.stop() == 0  # SIGTERM: drained and exited cleanly
    log = rl.log()
    assert '"event": "draining"' in log and '"event": "stopped"' in log


def test_response_dynamic_metadata_reaches_envoy(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    rl = ratelimit(_config_dir(tmp_path), "--response-dynamic-metadata")
    port = free_port()
    cfg = envoy_config([(port, False)], [rl.port], echo.port)
    log = tmp_path / "access.log"
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(log),
                "log_format": {
                    "text_format_source": {
                        "inline_string": "%DYNAMIC_METADATA(envoy.filters.http.ratelimit)%\n"
                    }
                },
            },
        }
    ]
    envoy(cfg)
    assert _get(port, "meta").status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
        time.sleep(0.1)
    import json

    meta = json.loads(log.read_text().strip().splitlines()[-1])
    assert meta["domain"] == "web"
    assert meta["descriptors"] == [{"entries": ["client=meta"]}]


def test_ready_envoy_config_limits_for_real(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    """envoy/ratelimit.yaml as shipped, with its fixed ports swapped for free ones."""
    import yaml

    cfg = yaml.safe_load((REPO / "envoy" / "ratelimit.yaml").read_text())
    limits = _config_dir(
        tmp_path,
        "domain: web\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: hour, requests_per_unit: 2}\n"
        "  - key: generic_key\n    value: login\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
    )
    rl = ratelimit(limits)
    port = free_port()
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    ports = {"app": echo.port, "ratelimit": rl.port}
    for c in cfg["static_resources"]["clusters"]:
        ep = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ep["address"]["socket_address"]["port_value"] = ports[c["name"]]
    cfg["admin"]["address"]["socket_address"]["port_value"] = 0
    envoy(cfg)

    def run() -> None:
        rl.stop()  # a fresh server: fresh memory counters for 127.0.0.1
        rl.start()
        codes = [httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        login = [httpx.post(f"http://127.0.0.1:{port}/login", timeout=10).status_code for _ in range(2)]
        assert login == [200, 429]  # its own budget (generic_key=login), 1 per hour

    _same_hour(run)
    r = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
    assert r.headers.get("x-ratelimit-limit", "").startswith("2")  # Envoy's own draft-03 headers


def test_second_server_on_a_served_port_fails_and_the_first_keeps_all_traffic(
    tmp_path: Path, envoy, echo, ratelimit
) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from tests.ratelimit.rlproc import ENVOYKIT

    rl = ratelimit(_config_dir(tmp_path))
    port = free_port()
    envoy(envoy_config([(port, True)], [rl.port], echo.port))
    second = subprocess.run(
        [ENVOYKIT, "ratelimit", "serve", "--config-dir", str(_config_dir(tmp_path)),
         "--address", f"127.0.0.1:{rl.port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1 and f"address in use: 127.0.0.1:{rl.port}" in second.stderr, second.stderr

    def run() -> None:  # one counter: the first server's (a sharing second would count apart)
        client = f"c{time.monotonic_ns()}"
        assert [_get(port, client).status_code for _ in range(12)] == [200] * 3 + [429] * 9

    _same_hour(run)
