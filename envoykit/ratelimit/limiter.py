"""Counter keys, hits and descriptor statuses: envoyproxy/ratelimit's ``base_limiter``, in Python.

For each descriptor with a limit, the limiter builds the counter key, asks the store to apply the
hits of the whole request at once, and turns each :class:`~envoykit.ratelimit.algorithms.Count` into a
``DescriptorStatus`` while counting the rule's stats:

- over limit when ``after > requests_per_unit``; ``limit_remaining`` is ``requests_per_unit - after``
  (0 when over); ``duration_until_reset`` is the time to the window's end (GCRA: until the bucket is
  full);
- near limit is the share of hits above ``floor(requests_per_unit * near_limit_ratio)`` (0.8);
  over limit counts only the hits past the limit, as in the reference;
- a shadow-mode rule that is over limit answers OK and counts ``shadow_mode``.

Counter keys are ``ekrl:{<domain>|<k1>=<v1>|...}|<algorithm><window seconds>``; ``\\ | = { }`` in
names and values are escaped, so keys never collide across domains, entries, units or algorithms,
and the braces keep all of one counter's keys in one Redis Cluster slot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TypeAlias

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.duration_pb2 import Duration

from envoykit.ratelimit.algorithms import ENFORCED, SHADOW, Algorithm, Count, Hit
from envoykit.ratelimit.config import Match
from envoykit.ratelimit.metrics import RuleStats

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
DescriptorStatus: TypeAlias = rls_pb2.RateLimitResponse.DescriptorStatus

_SPECIAL = re.compile(r"[\\|={}]")
_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\p", "=": "\\e", "{": "\\o", "}": "\\c"})
_ALGO_TAG = {Algorithm.FIXED_WINDOW: "f", Algorithm.SLIDING_WINDOW: "s", Algorithm.GCRA: "g"}


def escape(text: str) -> str:
    """Escape the key separators in a domain, descriptor key or value."""
    return text.translate(_ESCAPES) if _SPECIAL.search(text) else text


def counter_key(domain: str, descriptor: ratelimit_pb2.RateLimitDescriptor, match: Match, prefix: str) -> str:
    """The counter's base key for ``descriptor`` under ``match`` (share_threshold patterns applied)."""
    patterns = match.share_patterns
    parts = [prefix, "{", escape(domain)]
    for i, e in enumerate(descriptor.entries):
        value = patterns[i] if patterns is not None and patterns[i] else e.value
        parts.append(f"|{escape(e.key)}={escape(value)}")
    limit = match.limit
    parts.append(f"}}|{_ALGO_TAG[limit.algorithm]}{limit.window_ms // 1000}")
    return "".join(parts)


def hits_addend(request_addend: int, descriptor: ratelimit_pb2.RateLimitDescriptor) -> int:
    """The descriptor's ``hits_addend`` when set (0 allowed), else the request's (at least 1)."""
    if descriptor.HasField("hits_addend"):
        return int(descriptor.hits_addend.value)
    return request_addend if request_addend > 0 else 1


def count_stats(
    stats: RuleStats, limit: int, near_thr: int, before: int, after: int, addend: int, shadow: bool
) -> bool:
    """Count one hit into the rule's ``stats`` (reference semantics); True when it is over ``limit``.

    Near limit is the share of the hit above ``near_thr``; over limit only the share past ``limit``.
    """
    if after > limit:
        if before >= limit:
            stats.over_limit += addend
        else:
            stats.over_limit += after - limit
            stats.near_limit += limit - max(near_thr, before)
        stats.total_hits += addend
        if shadow:
            stats.shadow_mode += addend
        return True
    if after > near_thr:
        stats.near_limit += addend if before >= near_thr else after - near_thr
    stats.within_limit += addend
    stats.total_hits += addend
    return False


def status_for(match: Match, count: Count, addend: int, near_limit_ratio: float) -> DescriptorStatus:
    """The DescriptorStatus for one counted hit, updating the rule's stats (reference semantics)."""
    limit = match.limit
    over_thr = limit.requests_per_unit
    near_thr = math.floor(over_thr * near_limit_ratio)
    reset = Duration(seconds=max(0, -(-count.reset_ms // 1000)))
    if count_stats(match.stats, over_thr, near_thr, count.before, count.after, addend, limit.shadow_mode):
        return DescriptorStatus(
            code=OK if limit.shadow_mode else OVER_LIMIT,
            current_limit=limit.current_limit,
            limit_remaining=0,
            duration_until_reset=reset,
        )
    return DescriptorStatus(
        code=OK,
        current_limit=limit.current_limit,
        limit_remaining=over_thr - count.after,
        duration_until_reset=reset,
    )


def quota_group(descriptor: ratelimit_pb2.RateLimitDescriptor) -> str:
    """The quota group of a quota-mode descriptor: ``backend|model`` from its ``backend_name`` and
    ``model_name_override`` entries, else the whole descriptor."""
    backend = model = ""
    parts = []
    for e in descriptor.entries:
        if e.key == "backend_name":
            backend = e.value
        elif e.key == "model_name_override":
            model = e.value
        parts.append(f"{e.key}={e.value};")
    return f"{backend}|{model}" if backend or model else "".join(parts)


def build_hits(
    domain: str,
    descriptors: Sequence[ratelimit_pb2.RateLimitDescriptor],
    matches: Sequence[Match | None],
    request_addend: int,
    prefix: str,
    quota_mode: bool = False,
) -> tuple[list[Hit], list[int], list[int]]:
    """Hits for every descriptor with a limit: ``(hits, their descriptor indices, addends)``.

    A hit's addend is capped at ``requests_per_unit + 1``: a larger one is over the limit all the
    same, and the cap keeps counters exact (Redis scripts count in doubles; ``hits_addend`` may be
    up to 2^64-1). The returned addends are the requested ones (for the stats). ``quota_mode``
    makes every rule a quota-mode rule (GLOBAL_QUOTA_MODE).
    """
    hits: list[Hit] = []
    index: list[int] = []
    addends: list[int] = []
    groups: dict[str, int] = {}
    for i, match in enumerate(matches):
        if match is None:
            continue
        d = descriptors[i]
        addend = hits_addend(request_addend, d)
        limit = match.limit
        if quota_mode or limit.quota_mode:
            mode = groups.setdefault(quota_group(d), len(groups) + 1)
        else:
            mode = SHADOW if limit.shadow_mode else ENFORCED
        hits.append(
            Hit(
                counter_key(domain, d, match, prefix),
                min(addend, limit.requests_per_unit + 1),
                limit.requests_per_unit,
                limit.window_ms,
                limit.algorithm,
                mode,
            )
        )
        index.append(i)
        addends.append(addend)
    return hits, index, addends
