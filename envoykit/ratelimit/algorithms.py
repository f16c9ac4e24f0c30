"""Rate-limit units and algorithms: the arithmetic shared by every store.

Times are integers in milliseconds since the epoch; windows are in milliseconds too. Each algorithm
answers one *hit* (``addend`` requests against ``limit`` per ``window_ms``) with a :class:`Count`:
the usage before and after the hit and the time until the limit resets. Over limit means
``after > limit``; the caller derives ``limit_remaining`` and the stats from that, as
envoyproxy/ratelimit's ``base_limiter`` does.

- ``FIXED_WINDOW`` (default, the reference's): epoch-aligned windows of the unit's length; every hit
  counts, admitted or not; reset = time to the end of the window.
- ``SLIDING_WINDOW``: the current window's count plus the previous window's count weighted by how
  much of it still overlaps the sliding window; only admitted hits count. No double burst at edges.
- ``GCRA``: the generic cell rate algorithm (a token bucket holding ``limit`` tokens that refills
  evenly over the window); only admitted hits count; reset = time until the bucket is full again.

The Redis store runs the same arithmetic in a Lua script (``stores/redis_lua.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import IntEnum
from typing import NamedTuple

from envoy.service.ratelimit.v3 import rls_pb2

_Unit = rls_pb2.RateLimitResponse.RateLimit.Unit

# RateLimitResponse.RateLimit.Unit → window length in seconds (the reference's UnitToDivider:
# a month is 30 days, a year 365 days).
UNIT_SECONDS: dict[int, int] = {
    _Unit.SECOND: 1,
    _Unit.MINUTE: 60,
    _Unit.HOUR: 3600,
    _Unit.DAY: 86400,
    _Unit.WEEK: 7 * 86400,
    _Unit.MONTH: 30 * 86400,
    _Unit.YEAR: 365 * 86400,
}

# Unit names accepted in YAML (matched case-insensitively) → enum value.
UNIT_BY_NAME: dict[str, int] = {name: value for name, value in _Unit.items() if value != _Unit.UNKNOWN}


class Algorithm(IntEnum):
    """How a rule counts; chosen per rule with ``rate_limit.algorithm`` (envoykit's extension)."""

    FIXED_WINDOW = 0
    SLIDING_WINDOW = 1
    GCRA = 2


ALGORITHM_BY_NAME: dict[str, Algorithm] = {
    "": Algorithm.FIXED_WINDOW,
    "fixed_window": Algorithm.FIXED_WINDOW,
    "sliding_window": Algorithm.SLIDING_WINDOW,
    "gcra": Algorithm.GCRA,
}


ENFORCED = 0
"""``Hit.mode`` of a rule that refuses the request when over its limit."""
SHADOW = -1
"""``Hit.mode`` of a shadow-mode rule: over its limit, the request still passes."""


class Hit(NamedTuple):
    """One descriptor's request against its counter.

    ``key`` is the counter's base key (no window suffix); ``limit`` is requests per window.
    ``mode`` says how the hit weighs in the request's decision: :data:`ENFORCED`, :data:`SHADOW`, or a
    quota group number ≥ 1 (quota mode: the request is refused only when every group is over).
    """

    key: str
    addend: int
    limit: int
    window_ms: int
    algorithm: Algorithm
    mode: int = ENFORCED


class Count(NamedTuple):
    """Usage of a counter around one hit: ``before`` and ``after`` in requests, ``reset_ms``."""

    before: int
    after: int
    reset_ms: int


def window_start(now_ms: int, window_ms: int) -> int:
    """Start of the epoch-aligned window holding ``now_ms``."""
    return now_ms - now_ms % window_ms


def fixed_window(current: int, hit: Hit, now_ms: int) -> Count:
    """Fixed window: ``current`` is the window's count so far."""
    return Count(current, current + hit.addend, hit.window_ms - now_ms % hit.window_ms)


def sliding_estimate(previous: int, current: int, now_ms: int, window_ms: int) -> int:
    """Requests in the sliding window ending at ``now_ms`` (previous window weighted by overlap)."""
    elapsed = now_ms % window_ms
    return (previous * (window_ms - elapsed)) // window_ms + current


def sliding_window(previous: int, current: int, hit: Hit, now_ms: int) -> Count:
    """Sliding window from the previous and current fixed windows' admitted counts."""
    used = sliding_estimate(previous, current, now_ms, hit.window_ms)
    return Count(used, used + hit.addend, hit.window_ms - now_ms % hit.window_ms)


def gcra(tat_ms: float, hit: Hit, now_ms: int) -> tuple[Count, float]:
    """GCRA from the theoretical arrival time ``tat_ms`` (0 when unknown).

    Returns the count and the new theoretical arrival time to store when the hit is admitted.
    """
    if hit.limit <= 0:
        return Count(0, hit.addend, hit.window_ms), tat_ms
    interval = hit.window_ms / hit.limit
    tat = max(tat_ms, float(now_ms))
    used = max(0, math.ceil((tat - now_ms) / interval - 1e-9))
    new_tat = tat + hit.addend * interval
    # reset: until the bucket is full again (after this hit when it is admitted)
    full_at = new_tat if used + hit.addend <= hit.limit else tat
    return Count(used, used + hit.addend, math.ceil(full_at - now_ms)), new_tat


def counted_when_stopping(hits: Sequence[Hit], counts: Sequence[Count]) -> list[bool]:
    """Which hits count under STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, given every hit's count.

    A hit over its limit never counts. When the request is refused — an enforced hit is over, or
    every quota group is over — no hit counts. Otherwise every hit within its limit counts, except
    those of a quota group that is over (the request does not use that group).
    """
    over = [c.after > h.limit for h, c in zip(hits, counts, strict=True)]
    groups: dict[int, bool] = {}
    refused = False
    for h, o in zip(hits, over, strict=True):
        if h.mode == ENFORCED and o:
            refused = True
        elif h.mode > 0:
            groups[h.mode] = groups.get(h.mode, False) or o
    if refused or (groups and all(groups.values())):
        return [False] * len(hits)
    return [not o and not (h.mode > 0 and groups[h.mode]) for h, o in zip(hits, over, strict=True)]


def uncounted(count: Count) -> Count:
    """The count of a hit that was not applied: usage stays at ``before``."""
    return Count(count.before, count.before, count.reset_ms)
