"""The state directory of a running mesh: the plan, live status, per-component logs, generated files.

Layout::

    <state dir>/plan.json          the Plan (components, commands, addresses)
    <state dir>/status.json        the runner's pid and each component's state, pid, restarts
    <state dir>/logs/<name>.log    stdout+stderr of each component (appended across restarts)
    <state dir>/work/              generated files (Envoy bootstraps, Prometheus config, certificates)

``envoykit up`` writes it; ``envoykit status``, ``envoykit logs`` and ``envoykit demo`` read it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envoykit.mesh.plan import Plan

DEFAULT_STATE_DIR = ".envoykit/mesh"
STATE_DIR_ENV = "ENVOYKIT_STATE_DIR"


def default_state_dir() -> Path:
    """``$ENVOYKIT_STATE_DIR``, else ``.envoykit/mesh`` under the current directory."""
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass
class ComponentStatus:
    """What the runner knows of one component.

    Attributes:
        state: ``pending``, ``starting``, ``ready``, ``restarting``, ``failed`` or ``stopped``.
        pid: process id, which is also its process-group id (0 when not running).
        restarts: how many times it was restarted after exiting.
        last_exit: exit code of the last unexpected exit (negative: killed by that signal).
        ready_s: seconds from the mesh's start until this component was first ready.
    """

    state: str = "pending"
    pid: int = 0
    restarts: int = 0
    last_exit: int | None = None
    ready_s: float | None = None


@dataclass
class MeshStatus:
    """The content of ``status.json``.

    Attributes:
        runner_pid: pid of the ``envoykit up`` process.
        state: ``starting``, ``running``, ``stopping``, ``stopped`` or ``failed``.
        started_at: Unix time (s) the runner started.
        ready_s: seconds from start until every component was ready (None until then).
        components: name → status.
        pgids: every process-group id the runner ever started (to check that none is left).
    """

    runner_pid: int
    state: str = "starting"
    started_at: float = 0.0
    ready_s: float | None = None
    components: dict[str, ComponentStatus] = field(default_factory=dict)
    pgids: list[int] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeshStatus:
        """Inverse of :meth:`to_dict`."""
        comps = {k: ComponentStatus(**v) for k, v in data.get("components", {}).items()}
        return cls(**{**data, "components": comps})


class StateDir:
    """Paths and files of one mesh's state directory (see the module docstring).

    Args:
        root: the directory; created on :meth:`prepare`.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    @property
    def plan_path(self) -> Path:
        """``<root>/plan.json``."""
        return self.root / "plan.json"

    @property
    def status_path(self) -> Path:
        """``<root>/status.json``."""
        return self.root / "status.json"

    @property
    def logs(self) -> Path:
        """``<root>/logs``: one ``<name>.log`` per component."""
        return self.root / "logs"

    @property
    def work(self) -> Path:
        """``<root>/work``: generated files (bootstraps, Prometheus config, a copied mesh.yaml)."""
        return self.root / "work"

    def log_path(self, name: str) -> Path:
        """Log file of component ``name``."""
        return self.logs / f"{name}.log"

    def prepare(self) -> None:
        """Create the directories."""
        for d in (self.root, self.logs, self.work):
            d.mkdir(parents=True, exist_ok=True)

    def write_status(self, status: MeshStatus) -> None:
        """Replace ``status.json`` atomically (readers never see half a file)."""
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status.to_dict(), indent=1))
        tmp.replace(self.status_path)

    def read_status(self) -> MeshStatus:
        """Read ``status.json``.

        Raises:
            FileNotFoundError: no mesh ever ran with this state directory.
        """
        return MeshStatus.from_dict(json.loads(self.status_path.read_text()))

    def read_plan(self) -> Plan:
        """Read ``plan.json``.

        Raises:
            FileNotFoundError: no mesh ever ran with this state directory.
        """
        return Plan.read(self.plan_path)


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
