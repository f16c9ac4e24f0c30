"""Stop a synchronous rule that overruns its time budget.

Python cannot pre-empt a function from outside, but CPython can raise an exception *inside* another
thread at its next bytecode boundary (``PyThreadState_SetAsyncExc``). A daemon thread checks a few
times per budget whether the rule now running has passed its deadline and, if so, raises
:class:`RuleTimeout` in the serving thread, which the engine turns into a deny. A rule blocked inside a
C call (``time.sleep``, a socket read) is only interrupted when that call returns; Envoy's own ext_authz
timeout (200 ms by default) answers the client meanwhile, denied because our configs keep
``failure_mode_allow: false``.

Cost per rule matters (it runs for every rule of every Check): arming and disarming are plain stores
into :attr:`Watchdog.deadlines`, written by the engine itself; only :meth:`Watchdog.leave`, once per
check, takes the lock that the watchdog holds while it shoots, so a shot always lands before ``leave``
returns, inside the engine's handling.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time

#: The deadline of a thread that is inside a check but between rules: never shot.
IDLE = math.inf


class RuleTimeout(BaseException):
    """Raised inside a rule that ran past its budget (a BaseException so ``except Exception`` in the
    rule cannot swallow it)."""


class Watchdog:
    """Raises :class:`RuleTimeout` in the thread of a rule that runs past its deadline.

    Use per check: ``tid = enter()``, then ``deadlines[tid] = deadline`` before each rule and
    ``deadlines[tid] = IDLE`` after it, and ``leave(tid)`` in a ``finally`` inside the code that
    handles :class:`RuleTimeout`. Deadlines are ``time.perf_counter()`` seconds.

    Args:
        budget_s: a rule's time budget in seconds; the check runs every ``budget_s / 4`` (≥ 5 ms).
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._lock = threading.Lock()
        #: thread id -> deadline of the rule it runs (perf_counter s), or IDLE between rules
        self.deadlines: dict[int, float] = {}
        self.fired = 0
        self._interval = max(budget_s / 4, 0.005)
        self._thread = threading.Thread(target=self._loop, daemon=True, name="authz-watchdog")
        self._thread.start()

    def enter(self) -> int:
        """Register the calling thread for one check; returns its id for the calls below."""
        tid = threading.get_ident()
        self.deadlines[tid] = IDLE
        return tid

    def leave(self, tid: int) -> None:
        """End of the check in thread ``tid``; after this no timeout is raised for it."""
        with self._lock:
            self.deadlines.pop(tid, None)

    def _loop(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                now = time.perf_counter()
                for tid, deadline in list(self.deadlines.items()):
                    if now > deadline:
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(tid), ctypes.py_object(RuleTimeout)
                        )
                        # stays registered (IDLE) until leave(): the shot lands before leave returns
                        self.deadlines[tid] = IDLE
                        self.fired += 1
