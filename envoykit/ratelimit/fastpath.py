"""The memory store's lean path: a request's bytes → its compiled plan → the response's bytes.

Envoy sends the same ``RateLimitRequest`` bytes for every request that yields the same descriptors
(the descriptor values come from headers, routes and peers, which repeat). So the first call with a
given byte string is decided by the full path (:meth:`RateLimitService.answer`) and, when it is
*plain* (below), compiled into a :class:`_Plan`: the counter keys, capped addends, limits and stats of
its descriptors, and the pre-serialised parts of its ``DescriptorStatus`` messages. Every later
call with those bytes skips parsing, the descriptor-tree lookup and key building: it counts in the
memory store (:meth:`~envoykit.ratelimit.stores.memory.MemoryStore.add_fixed`), updates the rule
stats (:func:`~envoykit.ratelimit.limiter.count_stats`, the same arithmetic as the full path) and
writes the response's protobuf wire bytes directly.

*Plain* means: the service settings add nothing per request (no global shadow or quota mode, no
response headers or dynamic metadata, no STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT), and every
descriptor either has no limit or a fixed-window, enforced-or-shadow rule from the config (no
``unlimited``, ``replaces``, quota mode, sliding window/GCRA, or Envoy-sent limit override). Anything
else, and an unknown domain (counted and warned per call), always takes the full path. The plans of
one config are dropped on reload and bounded in number (:data:`MAX_PLANS`).

The response is byte-for-byte what upb serialises for the same message (``tests/ratelimit`` checks
it against the full path); field numbers are those of ``envoy.service.ratelimit.v3.RateLimitResponse``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.message import DecodeError

from envoykit.core.unary import GrpcStatusError, StatusCode
from envoykit.ratelimit.algorithms import Algorithm
from envoykit.ratelimit.config import Match
from envoykit.ratelimit.limiter import build_hits, count_stats
from envoykit.ratelimit.lookup import Lookup
from envoykit.ratelimit.metrics import CALL_SECONDS, RuleStats
from envoykit.ratelimit.stores.memory import MemoryStore

#: The most distinct request byte strings with a plan (then the table starts over).
MAX_PLANS = 10_000
_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
# DescriptorStatus{code: OK} — a descriptor without a limit — as RateLimitResponse.statuses (field 2)
_NO_LIMIT_STATUS = b"\x12\x02\x08\x01"
_OVERALL = {_OK: b"\x08\x01", _OVER: b"\x08\x02"}  # RateLimitResponse.overall_code (field 1)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(slots=True)
class _Counted:
    """One descriptor with a limit in a plan."""

    key: str  # counter base key; the window start is appended per call
    addend: int  # capped, as counted
    stats_addend: int  # as requested
    limit: int
    window_ms: int
    near_thr: int
    shadow: bool
    stats: RuleStats
    current_limit: bytes  # DescriptorStatus.current_limit (field 2), tag and length included
    window_start: int = -1  # the window of ``window_key``
    window_key: str = ""


@dataclass(slots=True)
class _Plan:
    """A compiled request: per descriptor, None (no limit) or what to count."""

    items: list[_Counted | None]
    counted: list[_Counted]


_FULL_PATH = _Plan([], [])  # marker: this request always takes the full path


def _parse(raw: bytes) -> rls_pb2.RateLimitRequest:
    try:
        return rls_pb2.RateLimitRequest.FromString(raw)
    except DecodeError:  # as the lean server answers a request it cannot parse
        raise GrpcStatusError(StatusCode.INTERNAL, "cannot parse the request message") from None


def _status(code: int, c: _Counted, remaining: int, reset_s: int) -> bytes:
    body = b"".join(
        (
            b"\x08" + _varint(code),
            c.current_limit,
            b"\x18" + _varint(remaining) if remaining else b"",
            b"\x22\x00" if reset_s == 0 else b"\x22" + _varint(len(s := b"\x08" + _varint(reset_s))) + s,
        )
    )
    return b"\x12" + _varint(len(body)) + body


class RawRequest:
    """The lean server's ``request_type`` for a handler that takes the request's bytes unparsed."""

    @staticmethod
    def FromString(data: bytes) -> bytes:
        return data


class FastPath:
    """The handler for the lean server with the memory store (called inline on its event loop).

    Args:
        lookup: returns the :class:`Lookup` of the current config (a new object after a reload).
        full: the full path, for requests that are not plain: parsed request → response message.
        store: the memory store both paths count in.
        plain_settings: the service settings allow plans at all (see the module docstring).
        near_limit_ratio: NEAR_LIMIT_RATIO.
        cache_key_prefix: CACHE_KEY_PREFIX.
        clock: seconds since the epoch.
    """

    request_type = RawRequest

    def __init__(
        self,
        lookup: Callable[[], Lookup],
        full: Callable[[rls_pb2.RateLimitRequest], rls_pb2.RateLimitResponse],
        store: MemoryStore,
        *,
        plain_settings: bool,
        near_limit_ratio: float,
        cache_key_prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup
        self._full = full
        self._store = store
        self._plain = plain_settings
        self._ratio = near_limit_ratio
        self._prefix = cache_key_prefix
        self._clock = clock
        self._plans: dict[bytes, _Plan] = {}
        self._plans_of: Lookup | None = None

    def __call__(self, raw: bytes) -> bytes | rls_pb2.RateLimitResponse:
        """Answer one ``ShouldRateLimit`` call given its request bytes.

        Raises:
            GrpcStatusError: as :meth:`RateLimitService.answer` (full path only: a plan never fails).
        """
        lk = self._lookup()
        if lk is not self._plans_of:  # a reload: plans name the old config's rules and stats
            self._plans = {}
            self._plans_of = lk
        plan = self._plans.get(raw)
        if plan is None:
            request = _parse(raw)
            plan = self._compile(lk, request) if self._plain else _FULL_PATH
            if len(self._plans) >= MAX_PLANS:
                self._plans = {}
            self._plans[raw] = plan
            return self._full(request)  # this call counts once, on the full path
        if plan is _FULL_PATH:
            return self._full(_parse(raw))
        start = time.perf_counter()
        try:
            return self._answer(plan)
        finally:
            CALL_SECONDS.observe(time.perf_counter() - start)

    def _answer(self, plan: _Plan) -> bytes:
        now_ms = int(self._clock() * 1000)
        counted = plan.counted
        for c in counted:
            ws = now_ms - now_ms % c.window_ms
            if ws != c.window_start:
                c.window_start, c.window_key = ws, f"{c.key}|{ws}"
        befores = self._store.add_fixed(counted, now_ms)
        over = False
        parts = []
        j = 0
        for item in plan.items:
            if item is None:
                parts.append(_NO_LIMIT_STATUS)
                continue
            c = item
            before = befores[j]
            j += 1
            after = before + c.addend
            reset_s = -(-(c.window_ms - now_ms % c.window_ms) // 1000)
            if count_stats(c.stats, c.limit, c.near_thr, before, after, c.stats_addend, c.shadow):
                parts.append(_status(_OK if c.shadow else _OVER, c, 0, reset_s))
                over |= not c.shadow
            else:
                parts.append(_status(_OK, c, c.limit - after, reset_s))
        parts.insert(0, _OVERALL[_OVER if over else _OK])
        return b"".join(parts)

    def _compile(self, lk: Lookup, request: rls_pb2.RateLimitRequest) -> _Plan:
        domain = request.domain
        if not domain or not request.descriptors or domain not in lk.config.domains:
            return _FULL_PATH
        matches: list[Match | None] = []
        for d in request.descriptors:
            if d.HasField("limit"):
                return _FULL_PATH
            m = lk.get_limit(domain, d)
            if m is not None:
                lim = m.limit
                if lim.unlimited or lim.replaces or lim.quota_mode or lim.algorithm != Algorithm.FIXED_WINDOW:
                    return _FULL_PATH
            matches.append(m)
        hits, index, addends = build_hits(
            domain, request.descriptors, matches, request.hits_addend, self._prefix
        )
        items: list[_Counted | None] = [None] * len(matches)
        for hit, i, addend in zip(hits, index, addends, strict=True):
            m = matches[i]
            assert m is not None
            cl = m.limit.current_limit.SerializeToString()
            items[i] = _Counted(
                key=hit.key,
                addend=hit.addend,
                stats_addend=addend,
                limit=hit.limit,
                window_ms=hit.window_ms,
                near_thr=math.floor(hit.limit * self._ratio),
                shadow=m.limit.shadow_mode,
                stats=m.stats,
                current_limit=b"\x12" + _varint(len(cl)) + cl,
            )
        return _Plan(items, [c for c in items if c is not None])
