"""What the runner runs: one :class:`Component` per process, and the :class:`Plan` that orders them.

A plan is plain data (JSON-serialisable) so that ``envoykit up`` can write it into the state directory and
``envoykit status`` / ``envoykit logs`` / ``envoykit demo`` can read it back from another process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

ProbeKind = Literal["tcp", "http", "grpc", "envoy", "none"]

# what a component is, as shown in the status table
Kind = Literal["control-plane", "server", "app", "sidecar", "gateway", "prometheus", "dashboard", "process"]


@dataclass(frozen=True)
class Probe:
    """How to tell that a component is ready.

    Attributes:
        kind: ``tcp`` (a connect succeeds), ``http`` (GET ``path`` answers 2xx), ``grpc``
            (``grpc.health.v1.Health/Check`` answers SERVING), ``envoy`` (admin ``/ready`` answers 200;
            ``port`` is the admin port), ``none`` (ready as soon as it runs).
        port: loopback TCP port to probe.
        path: URL path for ``http``.
        timeout_s: seconds to wait for readiness at start before giving up.
    """

    kind: ProbeKind
    port: int = 0
    path: str = "/"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class Component:
    """One supervised process.

    Attributes:
        name: unique name (``frontend``, ``frontend-sidecar``, ``authz``); also its log file's name.
        kind: what it is, for the status table.
        command: argv; run in its own process group so a stop reaches every child.
        probe: readiness check.
        depends_on: names that must be ready before this one starts.
        env: extra environment variables.
        address: what a person connects to (``http://127.0.0.1:8080``), for the table.
        metrics: ``host:port/path`` Prometheus scrapes, or ``""`` when it exposes none.
        restart: restart when it exits unexpectedly (with backoff).
    """

    name: str
    kind: Kind
    command: list[str]
    probe: Probe = field(default_factory=lambda: Probe("none"))
    depends_on: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    address: str = ""
    metrics: str = ""
    restart: bool = True


class PlanError(ValueError):
    """A plan that cannot run: duplicate names, unknown or circular dependencies."""


@dataclass
class Plan:
    """The components of a mesh and facts the demo and tests need.

    Attributes:
        components: every process, in any order (:meth:`levels` orders them).
        ingress: base URL of the ingress gateway (``http://127.0.0.1:8080``), or ``""``.
        info: free-form facts for ``envoykit demo`` and the tests (ports, names), JSON values only.
    """

    components: list[Component]
    ingress: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Component:
        """The component called ``name``.

        Raises:
            KeyError: no such component.
        """
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def levels(self) -> list[list[Component]]:
        """Components grouped in start order: each group depends only on earlier groups.

        Raises:
            PlanError: duplicate names, a dependency on an unknown name, or a cycle.
        """
        by_name: dict[str, Component] = {}
        for c in self.components:
            if c.name in by_name:
                raise PlanError(f"two components are called {c.name!r}")
            by_name[c.name] = c
        for c in self.components:
            for d in c.depends_on:
                if d not in by_name:
                    raise PlanError(f"{c.name} depends on unknown component {d!r}")
        done: set[str] = set()
        levels: list[list[Component]] = []
        pending = list(self.components)
        while pending:
            level = [c for c in pending if all(d in done for d in c.depends_on)]
            if not level:
                raise PlanError("dependency cycle among: " + ", ".join(c.name for c in pending))
            levels.append(level)
            done.update(c.name for c in level)
            pending = [c for c in pending if c.name not in done]
        return levels

    def to_json(self) -> str:
        """The plan as JSON text (see :meth:`from_json`)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Read a plan written by :meth:`to_json`."""
        data = json.loads(text)
        comps = [
            Component(
                **{
                    **c,
                    "probe": Probe(**c["probe"]),
                    "depends_on": tuple(c["depends_on"]),
                }
            )
            for c in data["components"]
        ]
        return cls(components=comps, ingress=data.get("ingress", ""), info=data.get("info", {}))

    def write(self, path: Path) -> None:
        """Write the plan as JSON to ``path``."""
        path.write_text(self.to_json())

    @classmethod
    def read(cls, path: Path) -> Plan:
        """Read a plan file written by :meth:`write`."""
        return cls.from_json(path.read_text())
