"""Run a plan in the foreground: progress while it starts, a status table, supervision until a signal."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from envoykit.mesh.plan import Plan
from envoykit.mesh.probes import probe_ready
from envoykit.mesh.state import StateDir, pid_alive
from envoykit.mesh.supervisor import Interrupted, MeshStartError, Supervisor
from envoykit.mesh.table import status_table


class AlreadyRunning(RuntimeError):
    """Another ``envoykit up`` is running with the same state directory."""


def check_not_running(state: StateDir) -> None:
    """Refuse to start a second runner on the same state directory.

    Raises:
        AlreadyRunning: the runner recorded in ``status.json`` is alive.
    """
    try:
        status = state.read_status()
    except (FileNotFoundError, ValueError):
        return
    if status.state not in ("stopped", "failed") and pid_alive(status.runner_pid):
        raise AlreadyRunning(
            f"a mesh is already running from {state.root} (runner pid {status.runner_pid}); "
            "stop it first or pass another --state-dir"
        )


def live_health(plan: Plan) -> dict[str, bool]:
    """Probe every component once (about a second at most each)."""
    return {c.name: probe_ready(c.probe, timeout=1.0) for c in plan.components}


def run_plan(
    plan: Plan,
    state: StateDir,
    *,
    cwd: Path | None = None,
    console: Console | None = None,
    grace_s: float = 10.0,
) -> int:
    """Start ``plan``, print its table, supervise it until SIGINT/SIGTERM/SIGHUP, then stop it.

    Returns:
        the process exit code: 0 after a clean stop, 1 when the mesh could not start, 130 when
        interrupted while starting.

    Raises:
        AlreadyRunning: another runner uses ``state``.
    """
    console = console or Console(stderr=True, emoji=False)
    check_not_running(state)
    sup = Supervisor(plan, state, cwd=cwd, console=console, grace_s=grace_s)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)

    console.print(f"starting {len(plan.components)} components; logs in {state.logs}")
    with Live(status_table(plan, sup.status), console=console, refresh_per_second=4, transient=True) as live:
        sup.on_progress = lambda: live.update(status_table(plan, sup.status))
        try:
            ready_s = sup.start()
        except Interrupted:
            console.print("interrupted while starting; everything stopped")
            return 130
        except MeshStartError as exc:
            console.print("[red]mesh failed to start:[/]", escape(str(exc)))
            return 1
        finally:
            sup.on_progress = None
    console.print(status_table(plan, sup.status, live_health(plan)))
    where = f"; ingress {plan.ingress}" if plan.ingress else ""
    if plan.info.get("dashboard"):
        where += f"; dashboard {plan.info['dashboard']}"
    console.print(f"[bold green]mesh ready in {ready_s:.1f}s[/]{where}. Ctrl-C stops it.")
    try:
        sup.supervise()
    finally:
        console.print("stopping ...")
        sup.stop()
    console.print("stopped; no process left")
    return 0
