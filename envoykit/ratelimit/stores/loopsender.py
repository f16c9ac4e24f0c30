"""Calls to a remote store from the event loop that never outlast the store timeout.

The event-loop form of :mod:`envoykit.ratelimit.stores.sender`, for the lean server: the round trip
is awaited on the loop that serves the call (an asyncio Redis client), so a call crosses no thread.
Same rules (issue 12):

- a caller waits for its answer at most ``timeout_s`` from the moment it asked
  (:class:`~envoykit.ratelimit.stores.base.StoreError` after), and each round trip is itself bounded
  by ``timeout_s``;
- what is queued while a round trip is in flight goes out together in the next one, and a call whose
  caller gave up is not sent;
- once a round trip fails, the store is *down*: calls fail at once; a probe (``probe``, bounded by
  ``timeout_s``) runs until the store answers, then calls flow again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from envoykit.ratelimit.stores.base import StoreError

R = TypeVar("R")
Q = TypeVar("Q")

_PROBE_PAUSE_S = 0.05  # between failed probes, so a refused connection does not spin


def _error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class LoopSender(Generic[Q, R]):
    """Runs ``send`` on the running event loop for batches of requests; callers wait at most ``timeout_s``.

    Use from one event loop only (the one the lean server runs).

    Args:
        name: store name, for the errors.
        send: sends a batch of requests in one round trip; returns one result per request, in order;
            raises on any failure (the failure is given to every caller of the batch).
        probe: raises while the store does not answer (e.g. PING); awaited while the store is down.
        timeout_s: the most a caller waits, and the most a round trip or probe may take, in seconds.
    """

    def __init__(
        self,
        name: str,
        send: Callable[[Sequence[Q]], Awaitable[Sequence[R]]],
        probe: Callable[[], Awaitable[object]],
        timeout_s: float,
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._send = send
        self._probe = probe
        self._queue: list[tuple[Q, asyncio.Future[R]]] = []
        self._busy = False  # a round trip task is running (it also drains the queue)
        self._down: StoreError | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def down(self) -> StoreError | None:
        """The failure that made the store down, or None while it answers."""
        return self._down

    async def call(self, request: Q) -> R:
        """Send ``request`` with the next batch and return its result.

        Raises:
            StoreError: the store is down, failed, or did not answer within ``timeout_s``.
        """
        if self._down is not None:
            raise StoreError(f"{self.name} unavailable ({self._down})")
        if self._closed:
            raise StoreError(f"{self.name} closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, fut))
        if not self._busy:
            self._busy = True
            self._spawn(self._drain())
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fut  # cancelled on timeout: the drain then skips it
        except TimeoutError:
            raise StoreError(f"{self.name}: no answer within {self.timeout_s * 1000:.0f} ms") from None

    def close(self) -> None:
        """Fail queued calls and stop probing."""
        self._closed = True
        self._fail(self._queue, StoreError(f"{self.name} closed"))
        self._queue = []
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                if self._down is not None or self._closed:
                    self._fail(batch, StoreError(f"{self.name} unavailable ({self._down})"))
                    continue
                live = [c for c in batch if not c[1].done()]  # callers that gave up are not sent
                if live:
                    await self._round_trip(live)
        finally:
            self._busy = False

    async def _round_trip(self, batch: list[tuple[Q, asyncio.Future[R]]]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                results = await self._send([req for req, _ in batch])
        except asyncio.CancelledError:
            self._fail(batch, StoreError(f"{self.name} closed"))
            raise
        except Exception as exc:  # every caller must be released, whatever failed
            err = _error(exc)
            if isinstance(exc, TimeoutError):
                err = StoreError(f"no answer within {self.timeout_s * 1000:.0f} ms")
            self._mark_down(err)
            self._fail(batch, err)
            return
        for (_, fut), r in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(r)

    def _mark_down(self, err: StoreError) -> None:
        if self._down is None and not self._closed:
            self._down = err
            self._spawn(self._probe_until_up())
        else:
            self._down = err

    async def _probe_until_up(self) -> None:
        while not self._closed:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._probe()
            except Exception as exc:
                self._down = (
                    StoreError(f"no answer within {self.timeout_s * 1000:.0f} ms")
                    if isinstance(exc, TimeoutError)
                    else _error(exc)
                )
                await asyncio.sleep(_PROBE_PAUSE_S)
                continue
            self._down = None
            return

    @staticmethod
    def _fail(batch: Sequence[tuple[object, asyncio.Future[R]]], err: StoreError) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(err)
