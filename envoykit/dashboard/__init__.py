"""The live mesh page: services, traffic, decisions, limits and the control plane, in a browser.

It reads only what the servers expose: Prometheus (or each component's ``/metrics``), the control
plane's ``/status`` and ``/config/<node>``, and JSON access-log files. ``envoykit up`` runs it
with the mesh; ``envoykit dashboard`` runs it against any Prometheus and control plane.

Public names::

    from envoykit.dashboard import (
        create_app, Poller, ControlClient, PrometheusSource, ScrapeSource, ScrapeTarget, page_state,
    )
"""

from envoykit.dashboard.app import create_app
from envoykit.dashboard.poller import ControlClient, Poller
from envoykit.dashboard.sources import PrometheusSource, ScrapeSource, ScrapeTarget
from envoykit.dashboard.view import page_state

__all__ = [
    "ControlClient",
    "Poller",
    "PrometheusSource",
    "ScrapeSource",
    "ScrapeTarget",
    "create_app",
    "page_state",
]
