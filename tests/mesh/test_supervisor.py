"""The runner's mechanics with real processes: order, readiness, logs, restarts with backoff, clean stop."""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from envoykit.core import free_port
from envoykit.mesh import Component, MeshStartError, Plan, PlanError, Probe, StateDir, Supervisor
from tests.mesh.helpers import backend, frontend, get_json, group_members


def _sup(plan: Plan, tmp_path: Path, **kw: Any) -> Supervisor:
    return Supervisor(plan, StateDir(tmp_path / "state"), console=Console(file=io.StringIO()), **kw)


def _ticked(sup: Supervisor, state: str) -> bool:
    """One supervision round, then whether the backend is in ``state``."""
    sup.tick()
    return sup.status.components["backend"].state == state


def _wait(cond: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_levels_order_and_refuse_bad_plans() -> None:
    a = Component("a", "process", ["true"])
    b = Component("b", "process", ["true"], depends_on=("a",))
    c = Component("c", "process", ["true"], depends_on=("a", "b"))
    assert [[x.name for x in lvl] for lvl in Plan([c, b, a]).levels()] == [["a"], ["b"], ["c"]]
    with pytest.raises(PlanError, match="unknown component 'zz'"):
        Plan([Component("a", "process", ["true"], depends_on=("zz",))]).levels()
    with pytest.raises(PlanError, match="cycle among: a, b"):
        Plan(
            [
                Component("a", "process", ["true"], depends_on=("b",)),
                Component("b", "process", ["true"], depends_on=("a",)),
            ]
        ).levels()
    with pytest.raises(PlanError, match="two components are called 'a'"):
        Plan([a, a]).levels()


def test_plan_round_trips_through_json() -> None:
    plan = Plan([backend(), Component("x", "process", ["true"], depends_on=("backend",))], ingress="http://i")
    assert Plan.from_json(plan.to_json()) == plan


def test_apps_start_in_order_serve_and_stop_cleanly(tmp_path: Path) -> None:
    be = backend(version="v2")
    fe = frontend(be.probe.port)
    sup = _sup(Plan([fe, be]), tmp_path)
    ready_s = sup.start()
    try:
        st = sup.status.components
        assert st["backend"].state == st["frontend"].state == "ready"
        assert st["backend"].ready_s is not None and st["frontend"].ready_s is not None
        assert st["backend"].ready_s <= st["frontend"].ready_s <= ready_s
        # the frontend reached the backend and passed its version and our request id back
        status, body = get_json(f"{fe.address}/hello", {"x-request-id": "r-1"})
        assert status == 200
        assert body["backend"]["version"] == "v2" and body["backend"]["path"] == "/hello"
        assert body["backend"]["headers"]["x-request-id"] == "r-1"
        saved = sup.state.read_status()
        assert saved.state == "running" and saved.components["frontend"].pid == sup.slots["frontend"].proc.pid
        assert sup.state.read_plan() == Plan([fe, be])
        pgids = list(saved.pgids)
    finally:
        sup.stop()
    assert all(group_members(g) == [] for g in pgids)
    assert sup.state.read_status().state == "stopped"
    # one log per component, with the app's own lines
    assert '"event": "serving", "service": "backend"' in sup.state.log_path("backend").read_text()
    assert '"event": "stopped", "service": "frontend"' in sup.state.log_path("frontend").read_text()


def test_stop_reaches_children_of_a_component(tmp_path: Path) -> None:
    # a shell that leaves a grandchild behind; SIGTERM to the shell alone would orphan it
    port = free_port()
    serve = f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();time.sleep(600)"
    comp = Component("forker", "process", ["sh", "-c", f'sleep 600 & {sys.executable} -c "{serve}"; wait'])
    comp = Component(**{**comp.__dict__, "probe": Probe("tcp", port, timeout_s=20)})
    sup = _sup(Plan([comp]), tmp_path, grace_s=3)
    sup.start()
    pgid = sup.slots["forker"].proc.pid
    assert len(group_members(pgid)) >= 3  # sh, sleep, python
    sup.stop()
    assert group_members(pgid) == []


def test_crash_is_restarted_with_doubling_backoff(tmp_path: Path) -> None:
    be = backend()
    sup = _sup(Plan([be]), tmp_path, backoff_s=0.3, max_backoff_s=5)
    sup.start()
    try:
        for n, expect_delay in ((1, 0.3), (2, 0.6)):
            pid = sup.slots["backend"].proc.pid
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: _ticked(sup, "restarting"))
            assert sup.status.components["backend"].last_exit == -signal.SIGKILL
            restart_in = sup.slots["backend"].restart_at - time.monotonic()
            assert expect_delay - 0.25 < restart_in <= expect_delay  # doubled after each crash
            _wait(lambda: _ticked(sup, "ready"))
            assert sup.status.components["backend"].restarts == n
            assert sup.slots["backend"].proc.pid != pid
            assert get_json(f"{be.address}/x")[0] == 200
    finally:
        sup.stop()


def test_component_exiting_at_start_fails_the_start_and_stops_the_rest(tmp_path: Path) -> None:
    be = backend()
    bad = Component(
        "broken",
        "process",
        [sys.executable, "-c", "import sys; print('bad config: field x'); sys.exit(3)"],
        probe=Probe("tcp", free_port()),
        depends_on=("backend",),
    )
    sup = _sup(Plan([be, bad]), tmp_path)
    with pytest.raises(
        MeshStartError, match=r"broken exited with code 3 while starting(.|\n)*bad config: field x"
    ):
        sup.start()
    assert group_members(sup.status.pgids[0]) == []
    assert sup.state.read_status().state == "failed"


def test_readiness_deadline_fails_the_start(tmp_path: Path) -> None:
    mute = Component("mute", "process", ["sleep", "60"], probe=Probe("tcp", free_port(), timeout_s=1))
    sup = _sup(Plan([mute]), tmp_path)
    with pytest.raises(MeshStartError, match=r"mute not ready after 1s \(tcp probe on port"):
        sup.start()
    assert group_members(sup.status.pgids[0]) == []
