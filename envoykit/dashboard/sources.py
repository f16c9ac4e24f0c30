"""Where the dashboard's numbers come from: a Prometheus server, or the components' own ``/metrics``.

Either way one fetch gives a :class:`Snapshot`: the current value of every counter sample the page
uses (by name and labels) and the health of every scraped component. Rates come from the difference
of two snapshots (:mod:`envoykit.dashboard.view`), so both sources are read the same way.

* :class:`PrometheusSource` asks Prometheus' HTTP API (``GET /api/v1/query``, an instant query of the
  series in :data:`WANTED`, and ``up`` for health). Component names are the scrape jobs.
* :class:`ScrapeSource` GETs each component's Prometheus text exposition itself (the local mesh when
  Prometheus is not installed). A component is up when its scrape answers 200 and parses.

Components without metrics (the apps) are checked with a :class:`HealthProbe` (a TCP connect or a GET).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

#: sample names the page reads (Istio's standard metrics and envoykit's servers)
WANTED = (
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "envoykit_authz_decisions_total",
    "envoykit_authz_native_decisions_total",
    "envoykit_ratelimit_hits_total",
    "envoykit_ratelimit_over_limit_total",
    "envoykit_ratelimit_near_limit_total",
    "envoykit_ratelimit_shadow_mode_total",
    "envoykit_config_reloads_total",
    "envoy_server_live",
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Health:
    """One component as the source last saw it.

    Attributes:
        name: component (scrape job) name.
        up: its metrics answered.
        error: why not, when not.
        kind: what it is (``sidecar``, ``server``, ...), when the source knows.
    """

    name: str
    up: bool
    error: str = ""
    kind: str = ""


@dataclass
class Snapshot:
    """Sample values at one moment.

    Attributes:
        at: epoch seconds of the fetch.
        samples: ``{name: {labels: value}}``; labels sorted by name; values summed over components.
        health: per component.
        error: the whole fetch failed (e.g. Prometheus unreachable): why.
    """

    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)
    health: list[Health] = field(default_factory=list)
    error: str = ""

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        """Add ``value`` to the sample ``name{labels}`` (the same series from two targets sums)."""
        key = tuple(sorted(labels.items()))
        series = self.samples.setdefault(name, {})
        series[key] = series.get(key, 0.0) + value


class Source(Protocol):
    """Anything that can take a :class:`Snapshot`."""

    description: str

    async def fetch(self, session: aiohttp.ClientSession) -> Snapshot:
        """Read every wanted sample now; failures are reported in the snapshot, never raised."""
        ...


def parse_exposition(text: str, into: Snapshot) -> None:
    """Add the :data:`WANTED` samples of a Prometheus text exposition to ``into``.

    Raises:
        ValueError: the text is not Prometheus text format.
    """
    wanted = set(WANTED)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                into.add(s.name, dict(s.labels), float(s.value))


@dataclass
class ScrapeTarget:
    """One component's metrics URL (``http://127.0.0.1:9101/metrics``) and its kind."""

    name: str
    url: str
    kind: str = ""


class ScrapeSource:
    """Scrape each target's ``/metrics`` directly, concurrently, every fetch.

    Args:
        targets: the components.
        timeout_s: per scrape.
    """

    def __init__(self, targets: list[ScrapeTarget], timeout_s: float = 2.0) -> None:
        self.targets = targets
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.description = f"scraping {len(targets)} components"

    async def _one(self, session: aiohttp.ClientSession, t: ScrapeTarget, snap: Snapshot) -> Health:
        try:
            async with session.get(t.url, timeout=self.timeout) as r:
                text = await r.text()
                if r.status != 200:
                    return Health(t.name, False, f"HTTP {r.status}", t.kind)
            parse_exposition(text, snap)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            return Health(t.name, False, f"{type(exc).__name__}: {exc}".rstrip(": "), t.kind)
        return Health(t.name, True, "", t.kind)

    async def fetch(self, session: aiohttp.ClientSession) -> Snapshot:
        """Scrape every target; see :class:`Snapshot`."""
        snap = Snapshot(time.time())
        snap.health = list(await asyncio.gather(*(self._one(session, t, snap) for t in self.targets)))
        return snap


class PrometheusSource:
    """Read the samples from a Prometheus server's HTTP API.

    Args:
        url: Prometheus' base URL (``http://127.0.0.1:9090``).
        timeout_s: per query.
    """

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.description = f"Prometheus at {self.url}"

    async def _query(self, session: aiohttp.ClientSession, query: str) -> list[dict[str, object]]:
        async with session.get(
            f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout
        ) as r:
            body = await r.json(content_type=None)
        if r.status != 200 or body.get("status") != "success":
            raise ValueError(f"HTTP {r.status}: {body.get('error', body)}")
        return list(body["data"]["result"])

    async def fetch(self, session: aiohttp.ClientSession) -> Snapshot:
        """Query the wanted series and ``up``; see :class:`Snapshot`."""
        snap = Snapshot(time.time())
        names = "|".join(WANTED)
        try:
            series = await self._query(session, f'{{__name__=~"{names}"}}')
            up = await self._query(session, "up")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
            snap.error = f"{self.description}: {type(exc).__name__}: {exc}"
            return snap
        for s in series:
            labels = dict(s["metric"])  # type: ignore[call-overload]
            name = labels.pop("__name__")
            # the same series scraped by several jobs would count twice; Prometheus' own labels go
            labels.pop("job", None)
            labels.pop("instance", None)
            labels.pop("kind", None)
            snap.add(name, labels, float(s["value"][1]))  # type: ignore[index]
        for s in up:
            m = s["metric"]
            ok = float(s["value"][1]) == 1.0  # type: ignore[index]
            snap.health.append(
                Health(
                    str(m.get("job", "?")),  # type: ignore[attr-defined]
                    ok,
                    "" if ok else "scrape failed (up == 0)",
                    str(m.get("kind", "")),  # type: ignore[attr-defined]
                )
            )
        snap.health.sort(key=lambda h: h.name)
        return snap


@dataclass(frozen=True)
class HealthProbe:
    """A component without metrics (an app), checked every poll.

    ``url`` is ``tcp://host:port`` (up when a connection opens) or ``http(s)://…`` (up on a 2xx answer).
    """

    name: str
    url: str
    kind: str = ""


async def probe(session: aiohttp.ClientSession, p: HealthProbe, timeout_s: float = 2.0) -> Health:
    """Check ``p`` once; failures are reported in the :class:`Health`, never raised."""
    try:
        if p.url.startswith("tcp://"):
            host, _, port = p.url[len("tcp://") :].rpartition(":")
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
            writer.close()
            return Health(p.name, True, "", p.kind)
        async with session.get(p.url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if 200 <= r.status < 300:
                return Health(p.name, True, "", p.kind)
            return Health(p.name, False, f"HTTP {r.status}", p.kind)
    except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Health(p.name, False, f"{type(exc).__name__}: {exc}".rstrip(": "), p.kind)
