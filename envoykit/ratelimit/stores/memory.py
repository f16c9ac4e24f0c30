"""In-memory counters: the embedded default for one ratelimit process.

One lock makes each :meth:`MemoryStore.apply` atomic across the server's worker threads. Every
counter carries its expiry (end of its window, or when a GCRA bucket is full again); expired ones
are swept at most once a second (less often for large tables), and the number of counters is
bounded (``max_keys``): past it the counters created first are evicted (those counters restart at
zero, a documented trade-off).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

from envoykit.ratelimit.algorithms import (
    Algorithm,
    Count,
    Hit,
    counted_when_stopping,
    fixed_window,
    gcra,
    sliding_window,
    uncounted,
    window_start,
)

_SWEEP_EVERY_MS = 1000


class FixedHit(Protocol):
    """A fixed-window hit whose counter key (window start included) is already built."""

    window_key: str
    window_start: int
    window_ms: int
    addend: int


_Write = tuple[str, float, int, bool]  # key, value, expires_at_ms, absolute (else added)


class MemoryStore:
    """Counters in a dict: ``key → [value, expires_at_ms]``.

    Args:
        max_keys: the most counters kept (each is a few hundred bytes).
    """

    name = "memory"

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        self._data: dict[str, list[float]] = {}
        self._next_sweep = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def _get(self, key: str, now_ms: int) -> float:
        cell = self._data.get(key)
        if cell is None or cell[1] <= now_ms:
            return 0
        return cell[0]

    def _add(self, key: str, addend: int, expires_at: int, now_ms: int) -> None:
        cell = self._data.get(key)
        if cell is None or cell[1] <= now_ms:
            self._data[key] = [addend, expires_at]
        else:
            cell[0] += addend

    def _sweep(self, now_ms: int) -> None:
        # a sweep is O(counters): space them out as the table grows (1 s per 100 000 counters)
        self._next_sweep = now_ms + max(_SWEEP_EVERY_MS, len(self._data) // 100)
        dead = [k for k, cell in self._data.items() if cell[1] <= now_ms]
        for k in dead:
            del self._data[k]
        excess = len(self._data) - self.max_keys
        if excess > 0:
            for k in list(self._data)[: excess + self.max_keys // 10]:
                del self._data[k]

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]:
        """Apply ``hits`` at ``now_ms`` (see :class:`~envoykit.ratelimit.stores.base.Store`)."""
        with self._lock:
            return self._apply(hits, now_ms, stop_when_over)

    def _apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool) -> list[Count]:
        if now_ms >= self._next_sweep or len(self._data) > self.max_keys:
            self._sweep(now_ms)
        counts: list[Count] = []
        pending: list[list[_Write]] = []
        for hit in hits:
            c, writes = self._count(hit, now_ms)
            counts.append(c)
            if stop_when_over:
                pending.append(writes)
            else:  # write now, so a later hit on the same counter sees this one
                self._write(writes, now_ms)
        if not stop_when_over:
            return counts
        counted = counted_when_stopping(hits, counts)
        for writes, yes in zip(pending, counted, strict=True):
            if yes:
                self._write(writes, now_ms)
        return [
            c if yes or c.after > h.limit else uncounted(c)
            for h, c, yes in zip(hits, counts, counted, strict=True)
        ]

    def add_fixed(self, hits: Sequence[FixedHit], now_ms: int) -> list[int]:
        """Count fixed-window hits (the lean path's plans, :mod:`envoykit.ratelimit.fastpath`): add
        each ``addend`` to the counter ``window_key`` (expiring at ``window_start + window_ms``), in
        order and atomically; the counts before each hit. Same counters as :meth:`apply`."""
        with self._lock:
            if now_ms >= self._next_sweep or len(self._data) > self.max_keys:
                self._sweep(now_ms)
            data = self._data
            befores = []
            for h in hits:
                cell = data.get(h.window_key)
                if cell is None or cell[1] <= now_ms:
                    befores.append(0)
                    if h.addend:
                        data[h.window_key] = [h.addend, h.window_start + h.window_ms]
                else:
                    befores.append(int(cell[0]))
                    cell[0] += h.addend
            return befores

    def _count(self, hit: Hit, now_ms: int) -> tuple[Count, list[_Write]]:
        """The hit's count and the writes that apply it (none for a refused sliding/GCRA hit)."""
        win = hit.window_ms
        if hit.algorithm == Algorithm.FIXED_WINDOW:
            ws = window_start(now_ms, win)
            key = f"{hit.key}|{ws}"
            return fixed_window(int(self._get(key, now_ms)), hit, now_ms), [
                (key, hit.addend, ws + win, False)
            ]
        if hit.algorithm == Algorithm.SLIDING_WINDOW:
            ws = window_start(now_ms, win)
            cur = f"{hit.key}|{ws}"
            prev = int(self._get(f"{hit.key}|{ws - win}", now_ms))
            c = sliding_window(prev, int(self._get(cur, now_ms)), hit, now_ms)
            return c, [(cur, hit.addend, ws + 2 * win, False)] if c.after <= hit.limit else []
        key = f"{hit.key}|g"
        c, new_tat = gcra(self._get(key, now_ms), hit, now_ms)
        return c, [(key, new_tat, int(new_tat) + 1, True)] if c.after <= hit.limit else []

    def _write(self, writes: list[_Write], now_ms: int) -> None:
        for key, value, expires_at, absolute in writes:
            if absolute:
                self._data[key] = [value, expires_at]
            elif value:
                self._add(key, int(value), expires_at, now_ms)

    def health(self) -> str | None:
        """Always None: counters in this process are always there."""
        return None

    def close(self) -> None:
        """Drop every counter."""
        with self._lock:
            self._data.clear()
