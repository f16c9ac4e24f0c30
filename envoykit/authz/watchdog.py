"""Stop a synchronous rule that overruns its time budget.

Python cannot pre-empt a function from outside, but CPython can raise an exception *inside* another
thread at its next bytecode boundary (``PyThreadState_SetAsyncExc``). A daemon thread checks a few
times per budget whether the rule now running has passed its deadline and, if so, raises
:class:`RuleTimeout` in the serving thread, which the engine turns into a deny. A rule blocked inside a
C call (``time.sleep``, a socket read) is only interrupted when that call returns; Envoy's own ext_authz
timeout (200 ms by default) answers the client meanwhile, denied because our configs keep
``failure_mode_allow: false``.
"""

from __future__ import annotations

import ctypes
import threading
import time


class RuleTimeout(BaseException):
    """Raised inside a rule that ran past its budget (a BaseException so ``except Exception`` in the
    rule cannot swallow it)."""


class Watchdog:
    """Raises :class:`RuleTimeout` in the thread of a rule that runs past its deadline.

    Args:
        budget_s: a rule's time budget in seconds; the check runs every ``budget_s / 4`` (≥ 5 ms).
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._lock = threading.Lock()
        self._running: dict[int, float] = {}  # thread id -> deadline (monotonic s)
        self.fired = 0
        self._interval = max(budget_s / 4, 0.005)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="authz-watchdog")
        self._thread.start()

    def enter(self) -> None:
        """Mark the start of a rule in the calling thread."""
        self._running[threading.get_ident()] = time.monotonic() + self.budget_s

    def leave(self) -> None:
        """Mark the end of the calling thread's rule; after this no timeout is raised for it."""
        with self._lock:
            self._running.pop(threading.get_ident(), None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            now = time.monotonic()
            with self._lock:
                for tid, deadline in list(self._running.items()):
                    if now > deadline:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(tid), ctypes.py_object(RuleTimeout)
                        )
                        del self._running[tid]
                        self.fired += 1
