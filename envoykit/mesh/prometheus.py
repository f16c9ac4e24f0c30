"""Prometheus for the local mesh: a scrape config generated from the plan, and its component."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from envoykit.mesh.plan import Component, Probe

PROMETHEUS_BIN = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """Path of Debian's ``prometheus`` (or one on PATH), or None when it is not installed."""
    if Path(PROMETHEUS_BIN).exists():
        return PROMETHEUS_BIN
    return shutil.which("prometheus")


def scrape_config(components: list[Component], interval_s: float = 5.0) -> dict[str, Any]:
    """A Prometheus config scraping every component that has ``metrics`` (``host:port/path``).

    One job per component, named after it, with a ``kind`` label (``sidecar``, ``server``, ...).
    """
    jobs = []
    for c in components:
        if not c.metrics:
            continue
        target, _, path = c.metrics.partition("/")
        jobs.append(
            {
                "job_name": c.name,
                "metrics_path": "/" + path,
                "static_configs": [{"targets": [target], "labels": {"kind": c.kind}}],
            }
        )
    return {
        "global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
        "scrape_configs": jobs,
    }


def prometheus_component(
    binary: str, scraped: list[Component], work: Path, port: int, depends_on: tuple[str, ...]
) -> Component:
    """Write ``work/prometheus.yml`` for ``scraped`` and return the Prometheus component.

    Args:
        binary: the prometheus executable.
        scraped: components to scrape (those with ``metrics``).
        work: directory for the config and the TSDB (``work/prometheus-data``).
        port: web port on 127.0.0.1 (UI, API, ``/-/ready``).
        depends_on: started after these.
    """
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(scraped), sort_keys=False))
    return Component(
        name="prometheus",
        kind="prometheus",
        command=[
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ],
        probe=Probe("http", port, "/-/ready", timeout_s=60),
        depends_on=depends_on,
        address=f"http://127.0.0.1:{port}",
        metrics=f"127.0.0.1:{port}/metrics",
    )
