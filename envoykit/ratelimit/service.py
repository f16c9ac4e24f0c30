"""``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``: the request path, top to bottom.

1. Check the request (domain and descriptors must not be empty → INVALID_ARGUMENT).
2. Look up each descriptor's limit in the current config; ``unlimited`` rules answer OK with
   ``limit_remaining = 2^32-1`` and are not counted; a rule whose ``name`` another matched rule
   ``replaces`` is dropped.
3. Apply all hits to the store in one call (a store failure → UNAVAILABLE within the store's
   timeout; Envoy's ``failure_mode_deny`` then decides).
4. Shape the response as envoyproxy/ratelimit does: overall OVER_LIMIT when any non-quota descriptor
   is over, or when every quota-mode group is over; optional ``RateLimit-Limit/-Remaining/-Reset``
   headers from the descriptor closest to its limit; global shadow mode turns OVER_LIMIT into OK;
   optional response dynamic metadata (``domain``, ``descriptors``, ``hitsAddend``, ``metadata``).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from envoykit.core.logs import get_logger
from envoykit.core.unary import GrpcStatusError, StatusCode
from envoykit.ratelimit.algorithms import Count, Hit
from envoykit.ratelimit.config import Match, RateLimitConfig
from envoykit.ratelimit.fastpath import FastPath
from envoykit.ratelimit.limiter import (
    OK,
    OVER_LIMIT,
    DescriptorStatus,
    build_hits,
    quota_group,
    status_for,
)
from envoykit.ratelimit.lookup import Lookup
from envoykit.ratelimit.metrics import CALL_SECONDS, STORE_ERRORS
from envoykit.ratelimit.stores.base import Store, StoreError
from envoykit.ratelimit.stores.memory import MemoryStore

MAX_UINT32 = 2**32 - 1
_GRPCIO_CODES = {
    StatusCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    StatusCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
_NO_LIMIT = DescriptorStatus(code=OK)


@dataclass(slots=True)
class _Plan:
    """One call before the store: the matched rules and the hits to apply."""

    matches: list[Match | None]
    unlimited: list[bool] | None
    hits: list[Hit]
    index: list[int]  # the descriptor of each hit
    addends: list[int]
    now_ms: int


@dataclass(frozen=True)
class ServiceSettings:
    """Service-wide switches (the reference's settings of the same meaning).

    Attributes:
        shadow_mode: global shadow mode (SHADOW_MODE): never answer OVER_LIMIT.
        quota_mode: treat every rule as quota mode (GLOBAL_QUOTA_MODE).
        response_headers: add ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
            (seconds) to the response (LIMIT_RESPONSE_HEADERS_ENABLED); off by default.
        header_names: the three header names, in that order.
        response_dynamic_metadata: fill ``dynamic_metadata`` (RESPONSE_DYNAMIC_METADATA).
        stop_when_over: do not increment any counter once one hit is over its limit
            (STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT).
        near_limit_ratio: share of the limit above which hits count as near limit (NEAR_LIMIT_RATIO).
        cache_key_prefix: prepended to every counter key (CACHE_KEY_PREFIX).
    """

    shadow_mode: bool = False
    quota_mode: bool = False
    response_headers: bool = False
    header_names: tuple[str, str, str] = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
    response_dynamic_metadata: bool = False
    stop_when_over: bool = False
    near_limit_ratio: float = 0.8
    cache_key_prefix: str = "ekrl:"


def _merge(dest: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if k in dest:
            if isinstance(dest[k], dict) and isinstance(v, dict):
                _merge(dest[k], v)
        else:
            dest[k] = copy.deepcopy(v)  # never alias (and later mutate) a rule's metadata


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    """The servicer.

    Args:
        config: returns the current :class:`RateLimitConfig` (read once per call, so a reload never
            splits a call between two versions).
        store: where counters live.
        settings: service-wide switches.
        clock: seconds since the epoch (``time.time``); tests pass a controllable one.
    """

    def __init__(
        self,
        config: Callable[[], RateLimitConfig],
        store: Store,
        settings: ServiceSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self.settings = settings or ServiceSettings()
        self._clock = clock
        self._lookup: Lookup | None = None
        self._log = get_logger("ratelimit")
        self._store_errors = STORE_ERRORS.labels(store.name)
        self._stats_lock = threading.Lock()
        self._last_error_log = 0.0
        self._errors_since_log = 0

    def fast_path(self, store: MemoryStore) -> FastPath:
        """The lean server's handler for the memory store (:mod:`envoykit.ratelimit.fastpath`)."""
        s = self.settings
        plain = not (
            s.shadow_mode
            or s.quota_mode
            or s.response_headers
            or s.response_dynamic_metadata
            or s.stop_when_over
        )
        return FastPath(
            self.lookup,
            self.answer,
            store,
            plain_settings=plain,
            near_limit_ratio=s.near_limit_ratio,
            cache_key_prefix=s.cache_key_prefix,
            clock=self._clock,
        )

    def lookup(self) -> Lookup:
        """The lookup for the current config (rebuilt when the config object changes)."""
        cfg = self._config()
        lk = self._lookup
        if lk is None or lk.config is not cfg:
            lk = self._lookup = Lookup(cfg)
        return lk

    def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        """The grpcio servicer method (``--server grpcio``; see the module docstring for the steps)."""
        try:
            return self.answer(request)
        except GrpcStatusError as exc:
            context.abort(_GRPCIO_CODES[exc.code], exc.message)
        raise AssertionError("unreachable")  # context.abort raises

    def answer(self, request: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        """One call with its metrics and error mapping (thread-safe).

        Raises:
            GrpcStatusError: INVALID_ARGUMENT for an empty domain or descriptor list; UNAVAILABLE when
                the store failed.
        """
        start = time.perf_counter()
        try:
            return self.should_rate_limit(request)
        except ValueError as exc:
            raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except StoreError as exc:
            raise self.store_failed(exc) from None
        finally:
            CALL_SECONDS.observe(time.perf_counter() - start)

    def store_failed(self, exc: StoreError) -> GrpcStatusError:
        """Count and log (at most once a second) a store failure; the status to answer with."""
        self._store_errors.inc()
        self._log_store_error(exc)
        return GrpcStatusError(StatusCode.UNAVAILABLE, f"rate limit store {self._store.name}: {exc}")

    def _log_store_error(self, exc: StoreError) -> None:
        # an outage under load would log every call: one line per second, with the count
        self._errors_since_log += 1
        now = time.monotonic()
        if now - self._last_error_log >= 1.0:
            self._log.warning(
                "store failed", store=self._store.name, error=str(exc), calls=self._errors_since_log
            )
            self._last_error_log = now
            self._errors_since_log = 0

    async def answer_async(
        self,
        request: rls_pb2.RateLimitRequest,
        apply: Callable[[Sequence[Hit], int, bool], Awaitable[list[Count]]],
    ) -> rls_pb2.RateLimitResponse:
        """:meth:`answer` with the store call awaited on the running event loop (``apply``: the store's
        ``apply_async``), for the lean server; same metrics and errors."""
        start = time.perf_counter()
        try:
            plan = self._plan(request)
            counts: list[Count] = []
            if plan.hits:
                counts = await apply(plan.hits, plan.now_ms, self.settings.stop_when_over)
            return self._finish(request, plan, counts)
        except ValueError as exc:
            raise GrpcStatusError(StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except StoreError as exc:
            raise self.store_failed(exc) from None
        finally:
            CALL_SECONDS.observe(time.perf_counter() - start)

    def should_rate_limit(self, request: rls_pb2.RateLimitRequest) -> rls_pb2.RateLimitResponse:
        """The decision without gRPC plumbing (thread-safe).

        Raises:
            ValueError: empty domain or no descriptors.
            StoreError: the store failed.
        """
        plan = self._plan(request)
        counts: list[Count] = []
        if plan.hits:
            counts = self._store.apply(plan.hits, plan.now_ms, self.settings.stop_when_over)
        return self._finish(request, plan, counts)

    def _plan(self, request: rls_pb2.RateLimitRequest) -> _Plan:
        domain = request.domain
        if not domain:
            raise ValueError("rate limit domain must not be empty")
        descriptors = request.descriptors
        if not descriptors:
            raise ValueError("rate limit descriptor list must not be empty")
        lookup = self.lookup()
        matches: list[Match | None] = [lookup.get_limit(domain, d) for d in descriptors]
        unlimited: list[bool] | None = None
        replacing: set[str] | None = None
        for i, m in enumerate(matches):
            if m is None:
                continue
            lim = m.limit
            if lim.replaces:
                replacing = (replacing or set()) | lim.replaces
            if lim.unlimited:
                if unlimited is None:
                    unlimited = [False] * len(matches)
                unlimited[i] = True
                matches[i] = None
        if replacing:
            for i, m in enumerate(matches):
                if m is not None and m.limit.name and m.limit.name in replacing:
                    matches[i] = None
        s = self.settings
        hits, index, addends = build_hits(
            domain, descriptors, matches, request.hits_addend, s.cache_key_prefix, s.quota_mode
        )
        now_ms = int(self._clock() * 1000) if hits else 0
        return _Plan(matches, unlimited, hits, index, addends, now_ms)

    def _finish(
        self, request: rls_pb2.RateLimitRequest, plan: _Plan, counts: list[Count]
    ) -> rls_pb2.RateLimitResponse:
        statuses = [_NO_LIMIT] * len(plan.matches)
        if plan.hits:
            ratio = self.settings.near_limit_ratio
            with self._stats_lock:  # stats are plain ints shared by the worker threads
                for j, i in enumerate(plan.index):
                    m = plan.matches[i]
                    assert m is not None
                    statuses[i] = status_for(m, counts[j], plan.addends[j], ratio)
        return self._respond(request, plan.matches, statuses, plan.unlimited)

    def _respond(
        self,
        request: rls_pb2.RateLimitRequest,
        matches: list[Match | None],
        statuses: list[DescriptorStatus],
        unlimited: list[bool] | None,
    ) -> rls_pb2.RateLimitResponse:
        s = self.settings
        want_min = s.response_headers
        minimum: DescriptorStatus | None = None
        min_remaining = MAX_UINT32
        failed = 0
        quota_groups: dict[str, bool] | None = None
        group_of: dict[int, str] = {}
        passed: list[int] = []
        out: list[DescriptorStatus] = []
        for i, st in enumerate(statuses):
            if want_min and st.HasField("current_limit") and st.limit_remaining < min_remaining:
                minimum, min_remaining = st, st.limit_remaining
            if unlimited is not None and unlimited[i]:
                out.append(DescriptorStatus(code=OK, limit_remaining=MAX_UINT32))
                continue
            out.append(st)
            over = st.code == OVER_LIMIT
            if not over:
                passed.append(i)
            m = matches[i]
            if s.quota_mode or (m is not None and m.limit.quota_mode):
                if quota_groups is None:
                    quota_groups = {}
                g = group_of[i] = quota_group(request.descriptors[i])
                quota_groups[g] = quota_groups.get(g, False) or over
            elif over:
                failed += 1
                minimum, min_remaining = st, 0
        quota_over = bool(quota_groups) and all(quota_groups.values()) if quota_groups else False
        code = OVER_LIMIT if failed or quota_over else OK
        response = rls_pb2.RateLimitResponse(statuses=out)
        if want_min and minimum is not None:
            lim, rem, reset = s.header_names
            response.response_headers_to_add.extend(
                [
                    base_pb2.HeaderValue(key=lim, value=str(minimum.current_limit.requests_per_unit)),
                    base_pb2.HeaderValue(key=rem, value=str(minimum.limit_remaining)),
                    base_pb2.HeaderValue(key=reset, value=str(minimum.duration_until_reset.seconds)),
                ]
            )
        if code == OVER_LIMIT and s.shadow_mode:
            code = OK
            with self._stats_lock:
                self.lookup().config.stats.global_shadow_mode += 1
        if s.response_dynamic_metadata:
            if quota_groups:
                passed = [i for i in passed if not quota_groups.get(group_of.get(i, ""), False)]
            self._metadata(response, request, matches, passed, bool(quota_groups))
        response.overall_code = code
        return response

    def _metadata(
        self,
        response: rls_pb2.RateLimitResponse,
        request: rls_pb2.RateLimitRequest,
        matches: list[Match | None],
        passed: list[int],
        quota: bool,
    ) -> None:
        descs = []
        for d in request.descriptors:
            item: dict[str, Any] = {"entries": [f"{e.key}={e.value}" for e in d.entries]}
            if d.HasField("limit"):
                item["limit"] = str(d.limit).strip()
            if d.HasField("hits_addend"):
                item["hitsAddend"] = d.hits_addend.value
            descs.append(item)
        meta: dict[str, Any] = {"domain": request.domain, "descriptors": descs}
        if request.hits_addend:
            meta["hitsAddend"] = request.hits_addend
        merged: dict[str, Any] = {}
        for i in passed:
            m = matches[i]
            if m is not None and m.limit.metadata:
                _merge(merged, m.limit.metadata)
        if merged:
            meta["metadata"] = merged
        if quota:
            backends = []
            seen: set[str] = set()
            for i in passed:
                d = request.descriptors[i]
                vals = {e.key: e.value for e in d.entries}
                b, mo = vals.get("backend_name", ""), vals.get("model_name_override", "")
                g = quota_group(d)
                if (b or mo) and g not in seen:
                    seen.add(g)
                    backends.append({"backend_name": b, "model_name_override": mo})
            if backends:
                meta["passedBackends"] = backends
        response.dynamic_metadata.update(meta)
