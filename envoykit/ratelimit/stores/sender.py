"""Calls to a remote store that never outlast the store timeout.

The gRPC server answers ShouldRateLimit on a few worker threads. If those threads waited on a stalled
store (a paused or partitioned Redis), every further call would queue behind them and wait many
timeouts, and Envoy's ``failure_mode_deny`` would apply far too late. So:

- one sender thread does the round trips; a caller queues its hits and waits for its answer at most
  ``timeout_s`` from the moment it asked (:class:`~envoykit.ratelimit.stores.base.StoreError` after);
- what is queued while a round trip is in flight goes out together in the next one (never more than
  one round trip per call, usually fewer under load), and a call whose caller gave up is not sent;
- once a round trip fails, the store is *down*: calls fail at once, without waiting, so worker threads
  stay free; the sender probes the store (``probe``, itself bounded by the socket timeout) until it
  answers, then calls flow again. One connection is used for the round trips and one for the probes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from envoykit.ratelimit.stores.base import StoreError

R = TypeVar("R")
Q = TypeVar("Q")

_PROBE_PAUSE_S = 0.05  # between failed probes, so a refused connection does not spin


class _Call(Generic[Q, R]):
    __slots__ = ("deadline", "done", "error", "request", "result")

    def __init__(self, request: Q, deadline: float) -> None:
        self.request = request
        self.deadline = deadline
        self.done = threading.Event()
        self.result: R | None = None
        self.error: StoreError | None = None


class BoundedSender(Generic[Q, R]):
    """Runs ``send`` on one thread for batches of requests; callers wait at most ``timeout_s``.

    Args:
        name: store name, for the thread and the errors.
        send: sends a batch of requests in one round trip; returns one result per request, in order;
            raises on any failure (the failure is given to every caller of the batch).
        probe: raises while the store does not answer (e.g. PING); used while the store is down.
        timeout_s: the most a caller waits, in seconds.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[Sequence[Q]], Sequence[R]],
        probe: Callable[[], object],
        timeout_s: float,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._send = send
        self._probe = probe
        self._cond = threading.Condition()
        self._queue: list[_Call[Q, R]] = []
        self._down: StoreError | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-sender", daemon=True)
        self._thread.start()

    @property
    def down(self) -> StoreError | None:
        """The failure that made the store down, or None while it answers."""
        return self._down

    def call(self, request: Q) -> R:
        """Send ``request`` with the next batch and return its result.

        Raises:
            StoreError: the store is down, failed, or did not answer within ``timeout_s``.
        """
        deadline = time.monotonic() + self.timeout_s
        c: _Call[Q, R] = _Call(request, deadline)
        with self._cond:
            if self._down is not None:
                raise StoreError(f"{self.name} unavailable ({self._down})")
            if self._closed:
                raise StoreError(f"{self.name} closed")
            self._queue.append(c)
            self._cond.notify()
        if not c.done.wait(max(0.0, deadline - time.monotonic())):
            raise StoreError(f"{self.name}: no answer within {self.timeout_s * 1000:.0f} ms")
        if c.error is not None:
            raise c.error
        assert c.result is not None
        return c.result

    def mark_down(self, error: StoreError) -> None:
        """Declare the store down (e.g. a failed health probe); calls fail until a probe answers."""
        with self._cond:
            self._down = error
            self._cond.notify()

    def close(self) -> None:
        """Stop the sender thread; queued calls fail."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(self.timeout_s + 1)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and self._down is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    batch, self._queue = self._queue, []
                    self._fail(batch, StoreError(f"{self.name} closed"))
                    return
                down = self._down is not None
                batch, self._queue = self._queue, []
            if down:
                self._fail(batch, StoreError(f"{self.name} unavailable"))
                self._probe_once()
                continue
            now = time.monotonic()
            live = [c for c in batch if c.deadline > now]  # callers that gave up are not sent
            if live:
                self._round_trip(live)

    def _round_trip(self, batch: list[_Call[Q, R]]) -> None:
        try:
            results = self._send([c.request for c in batch])
        except Exception as exc:  # every caller must be released, whatever failed
            err = exc if isinstance(exc, StoreError) else StoreError(f"{type(exc).__name__}: {exc}")
            self.mark_down(err)
            self._fail(batch, err)
            return
        for c, r in zip(batch, results, strict=True):
            c.result = r
            c.done.set()

    def _probe_once(self) -> None:
        try:
            self._probe()
        except Exception as exc:
            with self._cond:
                self._down = StoreError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                self._cond.wait(_PROBE_PAUSE_S)  # close() wakes it
            return
        with self._cond:
            self._down = None

    @staticmethod
    def _fail(batch: list[_Call[Q, R]], err: StoreError) -> None:
        for c in batch:
            c.error = err
            c.done.set()
