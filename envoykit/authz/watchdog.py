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
        self._running: tuple[int, float, int] | None = None
        self._seq = 0
        self.fired = 0
        self._interval = max(budget_s / 4, 0.005)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="authz-watchdog")
        self._thread.start()

    def enter(self) -> int:
        """Mark the start of a rule in the calling thread; returns a token for :meth:`leave`."""
        self._seq += 1
        self._running = (self._seq, time.monotonic() + self.budget_s, threading.get_ident())
        return self._seq

    def leave(self) -> None:
        """Mark the end of the rule; after this returns no timeout can be raised for it."""
        with self._lock:
            self._running = None

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                r = self._running
                if r is not None and time.monotonic() > r[1]:
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(
                        ctypes.c_ulong(r[2]), ctypes.py_object(RuleTimeout)
                    )
                    self._running = None
                    self.fired += 1
