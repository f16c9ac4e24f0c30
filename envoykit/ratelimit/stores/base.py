"""The store protocol: apply a request's hits to their counters in one step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from envoykit.ratelimit.algorithms import Count, Hit


class StoreError(RuntimeError):
    """The store could not answer (unreachable, timed out, refused); the call fails with UNAVAILABLE."""


class Store(Protocol):
    """Where counters live.

    ``apply`` takes every hit of one request (one per descriptor that has a limit) and returns one
    :class:`Count` per hit, in order. The hits of one call are applied atomically where the store
    allows it (memory, one Redis); with ``stop_when_over`` no counter is incremented when any hit
    would go over its limit (envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT).
    Counters expire on their own (window end, or a full GCRA bucket). Stores are called from the
    server's worker threads and must be thread-safe.

    Raises:
        StoreError: the store failed or did not answer within its timeout.
    """

    name: str

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]: ...

    def health(self) -> str | None:
        """None when the store can answer, else why not (for the readiness endpoints)."""
        ...

    def close(self) -> None: ...
