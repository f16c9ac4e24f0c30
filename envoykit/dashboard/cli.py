"""``envoykit dashboard``: serve the live mesh page against a Prometheus (or the components' own
``/metrics``) and a control plane."""

from __future__ import annotations

from pathlib import Path

import click

from envoykit.dashboard.sources import HealthProbe, PrometheusSource, ScrapeTarget, Source


def _named_urls(values: tuple[str, ...], schemes: tuple[str, ...], option: str) -> list[tuple[str, str, str]]:
    """``NAME[:KIND]=URL`` values as ``(name, kind, url)``.

    Raises:
        click.BadParameter: a value without ``=`` or with a URL of another scheme.
    """
    out = []
    for v in values:
        name, sep, url = v.partition("=")
        if not sep or not name or not url.startswith(schemes):
            want = " or ".join(f"{s}..." for s in schemes)
            raise click.BadParameter(f"{v!r}: expected NAME[:KIND]=URL, URL {want}", param_hint=option)
        name, _, kind = name.partition(":")
        out.append((name, kind, url))
    return out


@click.command("dashboard")
@click.option("--prometheus", default=None, help="Prometheus base URL (http://127.0.0.1:9090).")
@click.option(
    "--scrape",
    multiple=True,
    metavar="NAME[:KIND]=URL",
    help="Without Prometheus: scrape this component's metrics URL directly (repeatable).",
)
@click.option(
    "--probe",
    multiple=True,
    metavar="NAME[:KIND]=URL",
    help="A component without metrics: up when tcp://host:port connects or http://... answers 2xx.",
)
@click.option(
    "--control", default="", help="The control plane's metrics URL, which serves /status and /config/."
)
@click.option(
    "--access-log",
    "access_logs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A JSON-lines access-log file or folder (repeatable).",
)
@click.option("--address", default="127.0.0.1:9095", show_default=True, help="host:port of the page.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@click.option("--window", type=float, default=10.0, show_default=True, help="Seconds rates are taken over.")
@click.option("--log-level", default="info", show_default=True)
def dashboard(
    prometheus: str | None,
    scrape: tuple[str, ...],
    probe: tuple[str, ...],
    control: str,
    access_logs: tuple[Path, ...],
    address: str,
    interval: float,
    window: float,
    log_level: str,
) -> None:
    """Serve the live mesh page: service graph, canary split, authz decisions, rate limits, xDS state."""
    from aiohttp import web

    from envoykit.core.bind import AddressInUse, bind_exclusive
    from envoykit.core.logs import configure_logging, get_logger
    from envoykit.dashboard.app import create_app
    from envoykit.dashboard.poller import ControlClient, Poller
    from envoykit.dashboard.sources import ScrapeSource

    if bool(prometheus) == bool(scrape):
        raise click.UsageError("give either --prometheus URL or one or more --scrape NAME=URL")
    configure_logging(log_level)
    http = ("http://", "https://")
    targets = [ScrapeTarget(n, u, k) for n, k, u in _named_urls(scrape, http, "--scrape")]
    probes = [HealthProbe(n, u, k) for n, k, u in _named_urls(probe, ("tcp://", *http), "--probe")]
    source: Source = PrometheusSource(prometheus) if prometheus else ScrapeSource(targets)
    try:
        sock = bind_exclusive(address)  # refused while another process serves the address
    except (AddressInUse, ValueError) as exc:
        raise click.ClickException(f"--address {address}: {exc}") from exc
    poller = Poller(source, ControlClient(control), interval_s=interval, window_s=window, probes=probes)
    app = create_app(poller, list(access_logs))
    get_logger("dashboard").info("serving", url=f"http://{address}/", source=source.description)
    web.run_app(app, sock=sock, print=None, handle_signals=True, shutdown_timeout=2.0)
