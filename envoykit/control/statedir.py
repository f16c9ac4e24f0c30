"""Find the control plane's state directory (CA, node-token key, ``control-status.json``).

``envoykit control status`` and ``envoykit ca ...`` look where ``envoykit status`` looks: a mesh
started by ``envoykit up`` records in its plan (``<mesh state>/plan.json``, ``info.control_status``)
where its control plane keeps its state, so from the folder the mesh was started in (or any folder
below it) these commands find the running mesh's CA instead of suggesting a second one.

Order: ``--state-dir`` as given; else the plan of ``$ENVOYKIT_STATE_DIR``, or of ``.envoykit/mesh`` in
the current directory or its nearest parent that has one; else ``.envoykit`` (mesh.yaml's default
``control_plane.state_dir`` for ``envoykit control serve`` run by hand).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# the file contract with envoykit.mesh.state (the runner): where `envoykit up` keeps its plan
MESH_STATE_ENV = "ENVOYKIT_STATE_DIR"
MESH_STATE_DIR = Path(".envoykit") / "mesh"
DEFAULT_CONTROL_STATE = Path(".envoykit")


@dataclass(frozen=True)
class ControlState:
    """A control-plane state directory and how it was found (for messages)."""

    path: Path
    how: str

    @property
    def status_file(self) -> Path:
        """``control-status.json``, written once a second by a running control plane."""
        return self.path / "control-status.json"


def _from_plan(plan: Path) -> Path | None:
    try:
        info = json.loads(plan.read_text()).get("info") or {}
    except (OSError, ValueError):
        return None
    status = info.get("control_status")
    if status:
        return Path(status).parent
    sd = info.get("control_state_dir")
    if sd:
        p = Path(sd)
        return p if p.is_absolute() else (plan.parent / p)
    return None


def find_control_state(given: Path | None, cwd: Path | None = None) -> ControlState:
    """The control plane's state directory (see the module docstring for the order)."""
    if given is not None:
        return ControlState(given, "--state-dir")
    env = os.environ.get(MESH_STATE_ENV)
    if env:
        found = _from_plan(Path(env) / "plan.json")
        if found is not None:
            return ControlState(found, f"the mesh in ${MESH_STATE_ENV}={env}")
    here = (cwd or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        plan = folder / MESH_STATE_DIR / "plan.json"
        if plan.is_file():
            found = _from_plan(plan)
            if found is not None:
                return ControlState(found, f"the mesh started in {folder}")
    return ControlState(DEFAULT_CONTROL_STATE, "the default")
