"""Shared fixtures: a real Envoy started from a config built in the test, and an echo upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from envoykit.core.envoy import EnvoyProcess
from tests.upstream import EchoServer


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
