"""The supervisor: start a plan in dependency order, keep it running, stop it cleanly.

Start: components are grouped in levels (each depends only on earlier ones); a level's processes start
together and the next level starts once every one of them passed its readiness probe. A component that
exits or misses its probe deadline while the mesh starts aborts the start (its log tail is in the error)
and everything already started is stopped.

Run: a component that exits is restarted after a backoff that doubles per consecutive crash (from
``backoff_s`` up to ``max_backoff_s``) and resets once it stayed up ``stable_s`` seconds.

Stop: reverse start order; each process group gets SIGTERM, then SIGKILL after ``grace_s`` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from envoykit.mesh.plan import Component, Plan
from envoykit.mesh.probes import probe_ready
from envoykit.mesh.process import ManagedProcess
from envoykit.mesh.state import ComponentStatus, MeshStatus, StateDir


class MeshStartError(RuntimeError):
    """A component exited or was not ready in time while the mesh started; names it, with its log tail."""


class Interrupted(RuntimeError):
    """Stop was requested (Ctrl-C, SIGTERM) while the mesh was starting."""


@dataclass
class _Slot:
    proc: ManagedProcess
    status: ComponentStatus
    backoff_s: float
    restart_at: float = 0.0


class Supervisor:
    """Runs one :class:`~envoykit.mesh.plan.Plan`.

    Args:
        plan: the components.
        state: the state directory (plan, status and logs are written there).
        cwd: working directory of every component.
        console: where progress and events are printed.
        grace_s: seconds between SIGTERM and SIGKILL on stop.
        backoff_s: first restart delay after a crash (s); doubles per consecutive crash.
        max_backoff_s: cap of the restart delay (s).
        stable_s: uptime (s) after which the backoff resets.
        on_progress: called after every state change during start (drives a live table).
    """

    def __init__(
        self,
        plan: Plan,
        state: StateDir,
        *,
        cwd: Path | None = None,
        console: Console | None = None,
        grace_s: float = 10.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        stable_s: float = 30.0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.state = state
        self.console = console or Console(stderr=True, emoji=False)
        self.grace_s = grace_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_s = stable_s
        self.on_progress = on_progress
        self.stopping = threading.Event()
        self._t0 = 0.0
        self._levels = plan.levels()  # validates names and dependencies before anything starts
        self.slots: dict[str, _Slot] = {
            c.name: _Slot(ManagedProcess(c, state.log_path(c.name), cwd), ComponentStatus(), backoff_s)
            for c in plan.components
        }
        self.status = MeshStatus(runner_pid=os.getpid(), started_at=time.time())
        self.status.components = {name: s.status for name, s in self.slots.items()}

    # -- start -------------------------------------------------------------------------------------

    def start(self) -> float:
        """Start every component in dependency order and wait for each to be ready.

        Returns:
            seconds from the call until the whole mesh was ready.

        Raises:
            MeshStartError: a component exited or missed its readiness deadline (everything started
                so far is stopped again).
            Interrupted: :attr:`stopping` was set meanwhile (everything is stopped).
        """
        self.state.prepare()
        self.plan.write(self.state.plan_path)
        self._t0 = time.monotonic()
        self._save()
        try:
            for level in self._levels:
                self._start_level(level)
        except BaseException as exc:
            if isinstance(exc, MeshStartError):
                self.status.state, self.status.error = "failed", str(exc)
            self.stop()
            raise
        self.status.ready_s = round(time.monotonic() - self._t0, 3)
        self.status.state = "running"
        self._save()
        return self.status.ready_s

    def _start_level(self, level: list[Component]) -> None:
        for c in level:
            self._launch(self.slots[c.name])
        waiting = {c.name for c in level}
        while waiting:
            if self.stopping.is_set():
                raise Interrupted("stop requested while starting")
            for name in sorted(waiting):
                slot = self.slots[name]
                code = slot.proc.exit_code()
                if code is not None:
                    slot.status.state, slot.status.last_exit = "failed", code
                    raise MeshStartError(
                        f"{name} exited with code {code} while starting; last lines of "
                        f"{slot.proc.log_path}:\n{slot.proc.log_tail()}"
                    )
                if probe_ready(slot.proc.component.probe):
                    waiting.discard(name)
                    self._mark_ready(slot)
                elif time.monotonic() - slot.proc.started_at > slot.proc.component.probe.timeout_s:
                    slot.status.state = "failed"
                    raise MeshStartError(
                        f"{name} not ready after {slot.proc.component.probe.timeout_s:.0f}s "
                        f"({slot.proc.component.probe.kind} probe on port {slot.proc.component.probe.port}); "
                        f"last lines of {slot.proc.log_path}:\n{slot.proc.log_tail()}"
                    )
            if waiting:
                time.sleep(0.1)

    def _launch(self, slot: _Slot) -> None:
        try:
            slot.proc.start()
        except OSError as exc:
            slot.status.state = "failed"
            comp = slot.proc.component
            raise MeshStartError(f"{comp.name}: cannot run {comp.command[0]}: {exc}") from exc
        slot.status.state, slot.status.pid = "starting", slot.proc.pid
        self.status.pgids.append(slot.proc.pid)
        self._save()

    def _mark_ready(self, slot: _Slot) -> None:
        first = slot.status.ready_s is None
        slot.status.state = "ready"
        if first:
            slot.status.ready_s = round(time.monotonic() - self._t0, 3)
            self.console.print(f"[green]ready[/] {slot.proc.component.name} ({slot.status.ready_s:.1f}s)")
        else:
            self.console.print(f"[green]ready again[/] {slot.proc.component.name}")
        self._save()

    # -- run ---------------------------------------------------------------------------------------

    def supervise(self, poll_s: float = 0.2) -> None:
        """Watch every component until :attr:`stopping` is set, restarting crashed ones with backoff."""
        while not self.stopping.wait(poll_s):
            self.tick()

    def tick(self) -> None:
        """One supervision pass (exposed for tests): notice exits, restart when due, mark readiness."""
        now = time.monotonic()
        for name, slot in self.slots.items():
            st = slot.status
            comp = slot.proc.component
            if st.state in ("starting", "ready"):
                code = slot.proc.exit_code()
                if code is not None:
                    slot.proc.stop(0)  # reap, and take down any child it left in its group
                    st.last_exit, st.pid = code, 0
                    if not comp.restart:
                        st.state = "failed"
                        self.console.print(f"[red]exited[/] {name} with code {code} (not restarted)")
                    else:
                        st.state = "restarting"
                        slot.restart_at = now + slot.backoff_s
                        self.console.print(
                            f"[yellow]exited[/] {name} with code {code}; restarting in {slot.backoff_s:.1f}s"
                        )
                        slot.backoff_s = min(slot.backoff_s * 2, self.max_backoff_s)
                    self._save()
                    continue
            if st.state == "restarting" and now >= slot.restart_at:
                st.restarts += 1
                try:
                    self._launch(slot)
                except MeshStartError as exc:
                    self.console.print(str(exc), style="red", markup=False)
                    st.state, slot.restart_at = "restarting", now + slot.backoff_s
                    slot.backoff_s = min(slot.backoff_s * 2, self.max_backoff_s)
            elif st.state == "starting":
                if probe_ready(comp.probe, timeout=0.5):
                    self._mark_ready(slot)
                elif now - slot.proc.started_at > comp.probe.timeout_s:
                    self.console.print(
                        f"[yellow]not ready[/] {name} after {comp.probe.timeout_s:.0f}s, restarting"
                    )
                    slot.proc.stop(self.grace_s)
            elif st.state == "ready" and now - slot.proc.started_at > self.stable_s:
                slot.backoff_s = self.backoff_s

    # -- stop --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every component, latest level first; each group gets ``grace_s`` before SIGKILL."""
        final = "failed" if self.status.state == "failed" else "stopped"
        self.status.state = "stopping"
        self._save()
        for level in reversed(self._levels):
            procs = [self.slots[c.name].proc for c in level]
            # SIGTERM the whole level at once, then wait: a level stops in one grace period, not n
            threads = [threading.Thread(target=p.stop, args=(self.grace_s,)) for p in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for c in level:
                st = self.slots[c.name].status
                if st.state != "failed":
                    st.state = "stopped"
                st.pid = 0
        self.status.state = final
        self._save()

    # -- helpers -----------------------------------------------------------------------------------

    def _save(self) -> None:
        self.state.write_status(self.status)
        if self.on_progress is not None:
            self.on_progress()
