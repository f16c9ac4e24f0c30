"""The dashboard's state: a snapshot every ``interval_s``, the control plane's status, a short history.

One background task fetches; page requests only read the last computed state, so a slow Prometheus or
control plane never stalls the page and many open pages cost one fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import aiohttp
from prometheus_client import Counter

from envoykit.core.logs import get_logger
from envoykit.dashboard.sources import HealthProbe, Snapshot, Source, probe
from envoykit.dashboard.view import page_state

POLLS = Counter(
    "envoykit_dashboard_polls",
    "Polls of the metrics source and the control plane, by result (ok; error: a source failed).",
    ["result"],
)


class ControlClient:
    """Reads the control plane's ``/status`` and ``/config/<node>`` (see ``envoykit.control.statusapi``).

    Args:
        url: the control plane's metrics base URL (``http://127.0.0.1:9100``), or "" for none.
    """

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[dict[str, Any] | None, str]:
        """``(JSON body, "")`` or ``(None, why not)``."""
        if not self.url:
            return None, "no control plane URL given (--control)"
        try:
            async with session.get(f"{self.url}{path}", timeout=self.timeout) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    return None, f"control plane {path}: HTTP {r.status}: {body.get('error', body)}"
                return body, ""
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return None, f"control plane at {self.url}: {type(exc).__name__}: {exc}".rstrip(": ")


class Poller:
    """Fetches ``source``, the control plane and the ``probes`` every ``interval_s``; rates over ``window_s``.

    Attributes:
        state: the last :func:`envoykit.dashboard.view.page_state` (None before the first fetch).
    """

    def __init__(
        self,
        source: Source,
        control: ControlClient,
        interval_s: float = 2.0,
        window_s: float = 10.0,
        probes: list[HealthProbe] | None = None,
    ) -> None:
        self.source = source
        self.control = control
        self.probes = list(probes or [])
        self.interval_s = interval_s
        self.window_s = window_s
        self.history: deque[Snapshot] = deque()
        self.state: dict[str, Any] | None = None
        self.session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("dashboard")

    async def poll_once(self) -> dict[str, Any]:
        """Fetch now, update :attr:`state` and return it."""
        assert self.session is not None
        session = self.session
        snap, (status, error), *probed = await asyncio.gather(
            self.source.fetch(session),
            self.control.get(session, "/status"),
            *(probe(session, p) for p in self.probes),
        )
        snap.health.extend(probed)
        self.history.append(snap)
        # keep the newest snapshot at least window_s older than this one as the rate's base
        while len(self.history) > 2 and self.history[1].at <= snap.at - self.window_s:
            self.history.popleft()
        old = self.history[0] if len(self.history) > 1 else None
        state = page_state(snap, old, status, error)
        state["source"] = self.source.description
        state["interval_s"] = self.interval_s
        self.state = state
        POLLS.labels("error" if state["errors"] else "ok").inc()
        return state

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # keep polling; the page shows the last state and the error
                POLLS.labels("error").inc()
                self._log.error("poll failed", error=f"{type(exc).__name__}: {exc}")
                if self.state is not None:
                    self.state["errors"] = [f"dashboard: {type(exc).__name__}: {exc}"]
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        """Open the HTTP session and start polling."""
        self.session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling and close the session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.session is not None:
            await self.session.close()
