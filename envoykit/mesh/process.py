"""One supervised OS process in its own process group, with its output appended to a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from envoykit.mesh.plan import Component


def group_alive(pgid: int) -> bool:
    """True while any process of process group ``pgid`` exists (zombies of ours included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM every process of group ``pgid``, wait up to ``grace_s`` seconds, then SIGKILL the rest.

    ``reap`` is called while waiting so that our own child, once exited, stops counting as a member.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the runner dies, even by SIGKILL (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A running :class:`Component`: started with :meth:`start`, stopped with :meth:`stop`.

    The process leads a new session (``setsid``), so its process group holds it and every child it
    forks; :meth:`stop` signals the whole group and a crash leaves no orphan behind. It also gets
    SIGTERM if the runner itself dies without stopping it (``PR_SET_PDEATHSIG``).

    Args:
        component: what to run.
        log_path: file its stdout and stderr are appended to (one per component).
        cwd: working directory (the repository, so relative paths in commands resolve).
    """

    def __init__(self, component: Component, log_path: Path, cwd: Path | None = None) -> None:
        self.component = component
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        """PID of the process (also its process-group id), or 0 before :meth:`start`."""
        return self.proc.pid if self.proc is not None else 0

    def start(self) -> None:
        """Start the command.

        Raises:
            OSError: the command cannot be executed (not found, not executable).
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.component.env, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            log.write(f"--- envoykit: starting {' '.join(self.component.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.component.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
                # fires when the forking *thread* ends: the supervisor starts processes from one thread
                preexec_fn=_die_with_parent,
            )
        self.started_at = time.monotonic()

    def exit_code(self) -> int | None:
        """The exit code once the process ended (negative: killed by that signal), else None."""
        return self.proc.poll() if self.proc is not None else None

    def running(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s`` seconds, and reap the process."""
        if self.proc is None:
            return
        kill_group(self.proc.pid, grace_s, self.proc.poll)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log file."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
