"""The local mesh runner behind ``envoykit up``: plan a mesh, start and supervise it, report on it.

Public names::

    from envoykit.mesh import Component, Probe, Plan, Supervisor, StateDir, MeshStartError

A :class:`Plan` lists :class:`Component` processes with their readiness :class:`Probe` and
dependencies; a :class:`Supervisor` starts them in order, restarts crashed ones with backoff and stops
them by process group; a :class:`StateDir` holds the plan, the live status and one log per component.
"""

from envoykit.mesh.plan import Component, Plan, PlanError, Probe
from envoykit.mesh.state import StateDir
from envoykit.mesh.supervisor import Interrupted, MeshStartError, Supervisor

__all__ = [
    "Component",
    "Interrupted",
    "MeshStartError",
    "Plan",
    "PlanError",
    "Probe",
    "StateDir",
    "Supervisor",
]
