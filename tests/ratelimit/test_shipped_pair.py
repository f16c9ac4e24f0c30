"""envoy/ratelimit.yaml + examples/ratelimit, both as shipped, through a real Envoy; unknown domains are loud."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from envoykit.core import free_port
from tests.envoycfg import shipped
from tests.ratelimit.rlproc import envoy_config

pytestmark = pytest.mark.envoy

REPO = Path(__file__).resolve().parents[2]


def _same_minute(fn: Callable[[], None]) -> None:
    """Run ``fn``; once more if a minute boundary (a new fixed window) fell inside it."""
    for _ in range(2):
        minute = int(time.time()) // 60
        try:
            fn()
            return
        except AssertionError:
            if int(time.time()) // 60 == minute:
                raise


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_pair_as_shipped_limits(envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    rl = ratelimit(REPO / "examples" / "ratelimit", "--response-headers")
    cfg, port = shipped(REPO / "envoy" / "ratelimit.yaml", {"app": echo.port, "ratelimit": rl.port})
    envoy(cfg)
    base = f"http://127.0.0.1:{port}"

    def run() -> None:
        rl.stop()  # fresh memory counters
        rl.start()
        login = [httpx.post(base + "/login", timeout=10).status_code for _ in range(6)]
        assert login == [200] * 5 + [429]  # examples/ratelimit/web.yaml: 5 per minute
        home = httpx.get(base + "/", timeout=10)
        assert home.status_code == 200
        assert home.headers["x-ratelimit-limit"].startswith("100")  # the per-address rule answered

    _same_minute(run)
    text = rl.metrics()
    assert _sample(text, 'envoykit_ratelimit_over_limit_total{domain="web",key="generic_key_login"}') == 1
    assert "unknown rate-limit domain" not in rl.log()


def test_unknown_domain_warns_once_and_counts(tmp_path: Path, envoy, echo, ratelimit) -> None:  # type: ignore[no-untyped-def]
    limits = tmp_path / "limits"
    limits.mkdir()
    (limits / "other.yaml").write_text(
        "domain: envoykit\ndescriptors:\n  - key: client\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"
    )
    rl = ratelimit(limits)
    port = free_port()
    envoy(envoy_config([(port, False)], [rl.port], echo.port))  # sends domain "web"
    codes = [
        httpx.get(f"http://127.0.0.1:{port}/x", headers={"x-client": "a"}, timeout=10).status_code
        for _ in range(3)
    ]
    assert codes == [200, 200, 200]  # never limited ...
    assert (
        _sample(rl.metrics(), 'envoykit_ratelimit_domain_not_found_total{domain="web"}') == 3
    )  # ... counted
    warnings = [line for line in rl.log().splitlines() if "unknown rate-limit domain" in line]
    assert len(warnings) == 1, rl.log()  # ... and logged once, naming what is known
    assert '"domain": "web"' in warnings[0] and "envoykit" in warnings[0] and "warning" in warnings[0]
