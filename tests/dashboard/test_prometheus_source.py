"""The Prometheus source against a real Prometheus (Debian's ``prometheus`` or one on PATH; skipped
without): what Prometheus scraped from a live ``/metrics`` reads back as the same samples as a direct
scrape, and a target that is down shows as down."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter

from envoykit.core import free_port, start_metrics_server
from envoykit.dashboard.sources import PrometheusSource, ScrapeSource, ScrapeTarget, Snapshot

PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
)
pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="Prometheus is not installed (apt-get install prometheus)"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def exporter() -> Iterator[tuple[int, Counter]]:
    reg = CollectorRegistry()
    reqs = Counter("istio_requests", "r", ["reporter", "destination_workload", "response_code"], registry=reg)
    server, _, port = start_metrics_server(0, registry=reg)
    try:
        yield port, reqs
    finally:
        server.shutdown()
        server.server_close()


def _fetch(source: PrometheusSource | ScrapeSource) -> Snapshot:
    async def go() -> Snapshot:
        async with aiohttp.ClientSession() as s:
            return await source.fetch(s)

    return asyncio.run(go())


@pytest.mark.server
def test_prometheus_and_direct_scrape_agree(exporter: tuple[int, Counter], tmp_path: Path) -> None:
    port, reqs = exporter
    reqs.labels("destination", "backend-v1", "200").inc(42)
    reqs.labels("destination", "backend-v2", "503").inc(3)
    dead = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "telemetry",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": {"kind": "server"}}],
            },
            {"job_name": "gone", "static_configs": [{"targets": [f"127.0.0.1:{dead}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        source = PrometheusSource(f"http://127.0.0.1:{web}")
        direct = _fetch(ScrapeSource([ScrapeTarget("telemetry", f"http://127.0.0.1:{port}/metrics")]))
        deadline = time.monotonic() + 60
        while True:
            snap = _fetch(source)
            if not snap.error and len(snap.health) == 2 and snap.samples.get("istio_requests_total"):
                break
            assert time.monotonic() < deadline, f"Prometheus did not scrape in time: {snap}"
            time.sleep(0.5)
        assert snap.samples["istio_requests_total"] == direct.samples["istio_requests_total"]
        health = {h.name: (h.up, h.kind) for h in snap.health}
        assert health == {"telemetry": (True, "server"), "gone": (False, "")}
    finally:
        proc.terminate()
        proc.wait(30)
    # Prometheus gone: the fetch reports why instead of raising
    assert "Prometheus at" in _fetch(source).error
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{web}/-/ready", timeout=2)
