"""Shared fixtures: a real Envoy started from a config built in the test, and an echo upstream.

Markers: every test that starts Envoy, Redis or a server process carries ``envoy``, ``redis`` or
``server`` (``make test-fast`` runs the rest). Tests using the fixtures of :data:`PROCESS_FIXTURES` get
theirs here; tests that start processes themselves are marked in their module. ``make test-fast`` sets
``ENVOYKIT_TEST_FAST``, under which starting such a process from an unmarked test fails, so a missing
mark shows up instead of slowing the fast run down.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envoykit.core.envoy import EnvoyProcess
from tests.serverproc import ServerProcess, StartServer
from tests.upstream import EchoServer

#: fixture → the marker of the process it starts (fixtures of a conftest or a shared helper module)
PROCESS_FIXTURES = {
    "envoy": "envoy",
    "redis_server": "redis",
    "redis_cluster": "redis",
    "server_process": "server",
}
PROCESS_MARKERS = ("envoy", "redis", "server", "docker")
#: binaries whose start makes a test slow: a proxy, a store, a server of envoykit, a scraper
_SLOW_BINARIES = {"envoy", "redis-server", "prometheus", "chromium"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the markers of the process fixtures it uses (directly or through others)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in PROCESS_FIXTURES.items():
            if fixture in names:
                item.add_marker(marker)


def _starts_slow_process(args: Any) -> bool:
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else str(args).split()
    if not argv:
        return False
    if Path(argv[0]).name in _SLOW_BINARIES:
        return True
    # envoykit's servers and the runner: `envoykit <room> serve`, `python -m envoykit.cli ... serve`, `up`
    return any("envoykit" in a for a in argv[:3]) and any(a in ("serve", "up") for a in argv[1:6])


@pytest.fixture(autouse=True)
def _fast_run_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``ENVOYKIT_TEST_FAST`` (``make test-fast``), fail a test that starts Envoy, Redis or a server
    without the marker that keeps it out of the fast run."""
    if not os.environ.get("ENVOYKIT_TEST_FAST"):
        return
    if any(request.node.get_closest_marker(m) for m in PROCESS_MARKERS):
        return
    original = subprocess.Popen.__init__

    def guarded(self: Any, args: Any, *a: Any, **kw: Any) -> None:
        if _starts_slow_process(args):
            raise AssertionError(
                f"{request.node.nodeid} starts {args!r} but has no envoy/redis/server marker (tests/conftest.py)"
            )
        original(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach each started Envoy's log to the report of a failed test."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if rep.failed:
        for env in getattr(item, "_envoykit_envoys", []):
            rep.sections.append((f"envoy log ({env.name}, {rep.when})", env.log()[-6000:]))


StartEnvoy = Callable[..., EnvoyProcess]


@pytest.fixture
def envoy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartEnvoy]:
    """Start real Envoys: ``envoy(config_dict, name=..., concurrency=...)`` → a ready EnvoyProcess.

    Each Envoy waits for ``/ready`` on its admin port, has its log shown when the test fails, and is
    stopped at teardown.
    """
    started: list[EnvoyProcess] = []
    request.node._envoykit_envoys = started  # type: ignore[attr-defined]

    def start(config: dict[str, Any], *, name: str = "envoy", **kw: Any) -> EnvoyProcess:
        proc = EnvoyProcess(config, workdir=tmp_path / f"{name}-{len(started)}", name=name, **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    """An echo HTTP upstream on a free loopback port (see tests/upstream.py)."""
    with EchoServer() as srv:
        yield srv


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[StartServer]:
    """Start envoykit servers as real processes: ``server_process("ratelimit", "--config-dir", str(d))`` →
    a started :class:`tests.serverproc.ServerProcess` (``health=True``: wait for gRPC health SERVING;
    ``port=``/``metrics_port=``: given ports). At teardown each one still running gets SIGTERM and must
    drain and exit 0."""
    started: list[ServerProcess] = []

    def start(room: str, *args: str, **kw: Any) -> ServerProcess:
        p = ServerProcess(room, list(args), tmp_path, **kw)
        started.append(p)
        return p.start()

    yield start
    for p in started:
        running = p.proc is not None and p.proc.poll() is None
        code = p.stop()
        if running:
            assert code == 0, f"{p.room} exited {code} on SIGTERM:\n{p.log()[-3000:]}"
