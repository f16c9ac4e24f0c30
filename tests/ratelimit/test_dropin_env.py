"""envoyproxy/ratelimit drop-in: its environment variables, its metric names; through Envoy and Redis."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from envoykit.core import ConfigError, free_port
from envoykit.core.net import wait_for_port
from envoykit.ratelimit.envsettings import from_environ, go_duration_s
from tests.ratelimit.rlproc import ENVOYKIT, envoy_config

LIMITS = "domain: web\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 2}\n"


def test_mapped_variables() -> None:
    s = from_environ(
        {
            "REDIS_URL": "redis.local:6379",
            "REDIS_AUTH": "user:p@ss",
            "REDIS_TLS": "true",
            "REDIS_POOL_SIZE": "8",
            "REDIS_TIMEOUT": "1.5s",
            "RUNTIME_ROOT": "/srv/runtime_data/current",
            "RUNTIME_SUBDIRECTORY": "ratelimit",
            "USE_STATSD": "false",
            "LOG_LEVEL": "warn",
            "GRPC_PORT": "18081",
            "USE_PROMETHEUS": "true",
            "PROMETHEUS_ADDR": ":19090",
            "SHADOW_MODE": "true",
            "LIMIT_RESPONSE_HEADERS_ENABLED": "true",
            "LIMIT_REMAINING_HEADER": "X-Left",
            "NEAR_LIMIT_RATIO": "0.9",
            "HOME": "/root",  # not the reference's: untouched
        }
    ).values
    assert s == {
        "redis_url": "rediss://user:p%40ss@redis.local:6379",
        "redis_pool_size": 8,
        "store_timeout_ms": 1500,
        "config_dir": Path("/srv/runtime_data/current/ratelimit/config"),
        "address": "127.0.0.1:18081",
        "metrics_port": 19090,
        "log_level": "warning",
        "shadow_mode": True,
        "response_headers": True,
        "header_names": ("RateLimit-Limit", "X-Left", "RateLimit-Reset"),
        "near_limit_ratio": 0.9,
    }
    cluster = from_environ({"REDIS_TYPE": "CLUSTER", "REDIS_URL": "n1:7000,n2:7001", "REDIS_AUTH": "pw"})
    assert cluster.values == {"redis_cluster_url": "redis://:pw@n1:7000"}
    unix = from_environ({"REDIS_SOCKET_TYPE": "unix", "REDIS_URL": "/run/redis.sock"})
    assert unix.values == {"redis_url": "unix:///run/redis.sock"}
    assert from_environ({"DEBUG_PORT": "6070"}).values == {"metrics_port": 6070}
    assert from_environ({"PORT": "8080"}).values == {"metrics_port": 8080}  # its /healthcheck
    both = {"PORT": "8080", "USE_PROMETHEUS": "true", "PROMETHEUS_ADDR": ":8080"}
    assert from_environ(both).values == {"metrics_port": 8080}
    with pytest.raises(ConfigError, match="PORT=8080, PROMETHEUS_ADDR=9090: envoykit serves"):
        from_environ({**both, "PROMETHEUS_ADDR": ":9090"})
    # a --metrics-port flag settles it: the variables are not even read
    assert from_environ({**both, "PROMETHEUS_ADDR": ":9090"}, frozenset({"metrics_port"})).values == {}
    assert go_duration_s("T", "1m30s") == 90 and go_duration_s("T", "250ms") == 0.25


def test_unmappable_variables_are_refused_all_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        from_environ(
            {
                "USE_STATSD": "true",
                "REDIS_TYPE": "SENTINEL",
                "REDIS_URL": "m,s1:26379",
                "BACKEND_TYPE": "memcache",
                "HOST": "0.0.0.0",
                "LOG_LEVEL": "loud",
                "REDIS_TIMEOUT": "soon",
            }
        )
    text = str(err.value)
    for part in (
        "USE_STATSD='true': envoykit exports Prometheus metrics",
        "REDIS_TYPE='SENTINEL': only SINGLE and CLUSTER",
        "BACKEND_TYPE='memcache': memcached is not a supported store",
        "HOST='0.0.0.0': the HTTP port (/healthcheck, /metrics) listens on the gRPC host",
        "LOG_LEVEL='loud'",
        "--no-env",
    ):
        assert part in text, text
    # values that ask for what envoykit does anyway pass
    assert from_environ({"USE_STATSD": "false", "LOG_FORMAT": "json", "CONFIG_TYPE": "FILE"}).values == {}


def _serve(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with open(log, "ab") as fh:
        return subprocess.Popen([ENVOYKIT, "ratelimit", "serve", *args], stderr=fh, env=full)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.envoy
def test_reference_deployment_env_through_envoy_and_redis(tmp_path: Path, envoy, echo, redis_server) -> None:  # type: ignore[no-untyped-def]
    """Only the reference's variables: config from RUNTIME_ROOT, counters in REDIS_URL (host:port),
    gRPC on GRPC_PORT, Prometheus on PROMETHEUS_ADDR with the reference's metric names."""
    conf = tmp_path / "runtime" / "current" / "ratelimit" / "config"
    conf.mkdir(parents=True)
    (conf / "web.yaml").write_text(LIMITS)
    grpc_port, prom_port = free_port(), free_port()
    env = {
        "RUNTIME_ROOT": str(tmp_path / "runtime" / "current"),
        "RUNTIME_SUBDIRECTORY": "ratelimit",
        "REDIS_SOCKET_TYPE": "tcp",
        "REDIS_URL": f"127.0.0.1:{redis_server.port}",
        "REDIS_POOL_SIZE": "4",
        "USE_STATSD": "false",
        "USE_PROMETHEUS": "true",
        "PROMETHEUS_ADDR": f":{prom_port}",
        "PORT": str(prom_port),  # its /healthcheck: the same HTTP port in envoykit
        "GRPC_PORT": str(grpc_port),
        "LOG_LEVEL": "debug",
        "LIMIT_RESPONSE_HEADERS_ENABLED": "true",
    }
    log = tmp_path / "rl.log"
    proc = _serve(env, "--metric-names", "ratelimit", log=log)
    try:
        wait_for_port(grpc_port, timeout=30)
        port = free_port()
        envoy(envoy_config([(port, False)], [grpc_port], echo.port))
        client = f"c{time.monotonic_ns()}"
        codes = [
            httpx.get(f"http://127.0.0.1:{port}/", headers={"x-client": client}, timeout=10).status_code
            for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        keys = redis.Redis(port=redis_server.port).keys(f"*{client}*")
        assert keys, "counters are not in the Redis named by REDIS_URL"
        wait_for_port(prom_port, timeout=5)
        text = httpx.get(f"http://127.0.0.1:{prom_port}/metrics", timeout=5).text
        want = 'ratelimit_service_rate_limit_over_limit{domain="web",key1="client",key2=""} 1.0'
        assert want in text, text
        assert (
            "ratelimit_service_rate_limit_total_hits{" in text and "envoykit_ratelimit_hits_total" not in text
        )
        assert httpx.get(f"http://127.0.0.1:{prom_port}/healthcheck", timeout=5).status_code == 200
        assert '"settings from the environment"' in log.read_text()
    finally:
        _stop(proc)


@pytest.mark.server
def test_flags_win_and_refusals_stop_the_start(tmp_path: Path) -> None:
    conf = tmp_path / "limits"
    conf.mkdir()
    (conf / "web.yaml").write_text(LIMITS)
    flag_port, env_port = free_port(), free_port()
    log = tmp_path / "flags.log"
    proc = _serve(
        {"GRPC_PORT": str(env_port), "RUNTIME_ROOT": str(tmp_path / "nowhere")},
        "--config-dir", str(conf), "--address", f"127.0.0.1:{flag_port}",
        log=log,
    )  # fmt: skip
    try:
        wait_for_port(flag_port, timeout=30)  # the flag's port and dir, not the variables'
    finally:
        _stop(proc)
    refused = subprocess.run(
        [ENVOYKIT, "ratelimit", "serve", "--config-dir", str(conf)],
        env={**os.environ, "USE_STATSD": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "USE_STATSD='true'" in refused.stderr, refused.stderr
    ignored = _serve(
        {"USE_STATSD": "true"}, "--config-dir", str(conf), "--address", f"127.0.0.1:{env_port}", "--no-env",
        log=tmp_path / "noenv.log",
    )  # fmt: skip
    try:
        wait_for_port(env_port, timeout=30)
    finally:
        _stop(ignored)
