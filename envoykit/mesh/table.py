"""The status table of a mesh (rich), shared by ``envoykit up`` and ``envoykit status``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from envoykit.core.output import iso_time
from envoykit.mesh.plan import Plan
from envoykit.mesh.state import MeshStatus

_STATE_STYLE = {
    "ready": "green",
    "starting": "yellow",
    "restarting": "yellow",
    "pending": "dim",
    "failed": "red",
    "stopped": "dim",
}


def status_table(plan: Plan, status: MeshStatus, health: dict[str, bool] | None = None) -> Table:
    """A table with one row per component: name, kind, address, pid, state, restarts (and health).

    Args:
        plan: the components (their order is the table's).
        status: the runner's view (state, pid, restarts).
        health: live probe results by name; the column is left out when None.
    """
    title = f"mesh {status.state}"
    if status.ready_s is not None:
        title += f" (ready in {status.ready_s:.1f}s)"
    table = Table(title=title, title_justify="left")
    for col in ("component", "kind", "address", "pid", "state", "restarts"):
        table.add_column(col, justify="right" if col in ("pid", "restarts") else "left", overflow="fold")
    if health is not None:
        table.add_column("health")
    for level in plan.levels():
        for c in level:
            st = status.components.get(c.name)
            state = st.state if st else "pending"
            row = [
                c.name,
                c.kind,
                c.address,
                str(st.pid) if st and st.pid else "-",
                f"[{_STATE_STYLE.get(state, '')}]{state}[/]",
                str(st.restarts) if st else "0",
            ]
            if health is not None:
                row.append("[green]ok[/]" if health.get(c.name) else "[red]down[/]")
            table.add_row(*row)
    return table


def control_summary(status: dict[str, Any]) -> list[str]:
    """Lines about the control plane from its ``control-status.json``: config generation, connected
    Envoys with acknowledged versions, NACKs and the last refused change of mesh.yaml."""
    lines = [
        f"control plane: mesh generation {status.get('generation', '?')}, "
        f"{len(status.get('streams', []))} of {len(status.get('nodes', []))} Envoys connected"
    ]
    for nack in status.get("nacks", []):
        what = f"{nack['node']} {nack['type']} v{nack['version']}: {nack['message']}"
        lines.append(f"[red]NACK[/] {escape(what)}")
    if status.get("last_error"):
        at = status.get("last_refused_at")
        when = time.strftime(" at %H:%M:%S", time.localtime(at)) if at else ""
        lines.append(
            f"[red]last change refused{when} (serving the last good version):[/] "
            f"{escape(status['last_error'])}"
        )
    return lines


def status_doc(
    plan: Plan,
    status: MeshStatus,
    health: dict[str, bool],
    state_dir: Path,
    control: dict[str, Any] | None,
    ok: bool,
) -> dict[str, Any]:
    """``envoykit status -o json``: the table's facts as data, times in ISO 8601 (UTC).

    ``{ok, state, state_dir, started_at, ready_s, ingress, dashboard, error, components: [{name, kind,
    address, pid, state, restarts, last_exit, healthy}], control_plane: {generation, applied_at,
    nodes, connected, nacks, last_error} | None}``.
    """
    comps = []
    for level in plan.levels():
        for c in level:
            st = status.components.get(c.name)
            comps.append(
                {
                    "name": c.name,
                    "kind": c.kind,
                    "address": c.address,
                    "pid": st.pid if st and st.pid else None,
                    "state": st.state if st else "pending",
                    "restarts": st.restarts if st else 0,
                    "last_exit": st.last_exit if st else None,
                    "healthy": bool(health.get(c.name)),
                }
            )
    cp = None
    if control is not None:
        cp = {
            "generation": control.get("generation"),
            "applied_at": iso_time(control.get("applied_at")),
            "nodes": control.get("nodes", []),
            "connected": [s.get("node") for s in control.get("streams", [])],
            "nacks": [{**n, "at": iso_time(n.get("at"))} for n in control.get("nacks", [])],
            "last_error": control.get("last_error"),
            "last_refused_at": iso_time(control.get("last_refused_at")),
        }
    return {
        "ok": ok,
        "state": status.state,
        "state_dir": str(state_dir),
        "started_at": iso_time(status.started_at) if status.started_at else None,
        "ready_s": status.ready_s,
        "ingress": plan.ingress or None,
        "dashboard": plan.info.get("dashboard"),
        "error": status.error or None,
        "components": comps,
        "control_plane": cp,
    }
