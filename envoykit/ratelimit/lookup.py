"""Find the limit for one request descriptor, exactly as envoyproxy/ratelimit's ``GetLimit`` does.

Walk the domain's tree one entry at a time. At each level the child is, in order: the exact
``key_value``; else the first wildcard child (in file order) whose ``key_value`` pattern matches;
else the key-only default ``key``. A limit applies only at the node of the *last* entry; the walk
stops when a node has no children. A limit override sent by Envoy (``descriptor.limit``) wins over
the config for any known domain, counts under stats key ``domain.k1_v1.k2_v2`` and never takes shadow
mode.

Stats keys: the config node's composite key path, except that ``value_to_metric`` puts the request's
value at that level, ``share_threshold`` keeps the wildcard pattern, and a ``detailed_metric`` rule
uses the request's ``key_value`` at every level (patterns where shared).
"""

from __future__ import annotations

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2

from envoykit.core.logs import get_logger
from envoykit.ratelimit.algorithms import UNIT_SECONDS
from envoykit.ratelimit.config import Match, Node, RateLimit, RateLimitConfig, _limit_proto

_OVERRIDE_CACHE_MAX = 10_000
_log = get_logger("ratelimit")


class Lookup:
    """Limit lookups against one :class:`RateLimitConfig` (build a new one on each reload)."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self._overrides: dict[tuple[str, str, int, int], Match] = {}

    def get_limit(self, domain: str, descriptor: ratelimit_pb2.RateLimitDescriptor) -> Match | None:
        """The limit that applies to ``descriptor`` in ``domain``, or None (no limit)."""
        root = self.config.domains.get(domain)
        if root is None:
            if self.config.stats.domain_not_found(domain):
                _log.warning(
                    "request for an unknown rate-limit domain: nothing is limited",
                    domain=domain,
                    known_domains=sorted(self.config.domains),
                    hint="the domain of Envoy's ratelimit filter must match a config file's domain",
                )
            return None
        if descriptor.HasField("limit"):
            return self._override(domain, descriptor)
        entries = descriptor.entries
        last = len(entries) - 1
        node = root
        found: Node | None = None
        # Only built when a rule's stats key depends on request values.
        dynamic = False
        vtm_segments: list[str] = []
        share: dict[int, str] | None = None
        for i, entry in enumerate(entries):
            key = entry.key
            value = entry.value
            composite = f"{key}_{value}"
            nxt = node.children.get(composite)
            wild_key = ""
            if nxt is None and node.wildcards:
                for pattern, regex, child in node.wildcards:
                    if regex.fullmatch(composite):
                        nxt, wild_key = child, pattern
                        break
            by_value = nxt is not None
            if nxt is None:
                nxt = node.children.get(key)
                if nxt is None:
                    break
            if wild_key and nxt.share_threshold and nxt.wildcard_pattern:
                if share is None:
                    share = {}
                share[i] = nxt.wildcard_pattern[len(key) + 1 :]
            # value_to_metric path segment for this level
            if wild_key:
                if i not in (share or ()) and nxt.value_to_metric:
                    seg = composite if value else key
                    dynamic = True
                else:
                    seg = f"{key}_{wild_key[len(key) + 1 :]}"
            elif by_value:
                seg = composite if value else key
            elif nxt.value_to_metric and value:
                seg = composite
                dynamic = True
            else:
                seg = key
            vtm_segments.append(seg)
            if i == last and nxt.limit is not None:
                found = nxt
            if not nxt.children:
                break
            node = nxt
        if found is None:
            return None
        limit = found.limit
        assert limit is not None and found.match is not None
        patterns = tuple(share.get(i, "") for i in range(len(entries))) if share else None
        if limit.detailed_metric:
            segs = []
            for i, e in enumerate(entries):
                if patterns and patterns[i]:
                    segs.append(f"{e.key}_{patterns[i]}")
                elif patterns:
                    segs.append(f"{e.key}_{e.value}" if e.value else e.key)
                else:
                    segs.append(f"{e.key}_{e.value}")
            return self._dynamic(limit, ".".join(segs), patterns)
        if dynamic:
            return self._dynamic(limit, ".".join(vtm_segments), patterns)
        if patterns is not None:
            return Match(limit, found.match.stats, found.match.stats_key, patterns)
        return found.match

    def _dynamic(self, limit: RateLimit, stats_key: str, patterns: tuple[str, ...] | None) -> Match:
        if f"{limit.domain}.{stats_key}" == limit.full_key and limit.stats is not None:
            return Match(limit, limit.stats, stats_key, patterns)
        return Match(limit, self.config.stats.rule(limit.domain, stats_key), stats_key, patterns)

    def _override(self, domain: str, descriptor: ratelimit_pb2.RateLimitDescriptor) -> Match | None:
        override = descriptor.limit
        unit = int(override.unit)
        window_s = UNIT_SECONDS.get(unit)
        if window_s is None:  # UNKNOWN unit: nothing to count against
            return None
        stats_key = ".".join(f"{e.key}_{e.value}" if e.value else e.key for e in descriptor.entries)
        cache_key = (domain, stats_key, int(override.requests_per_unit), unit)
        found = self._overrides.get(cache_key)
        if found is not None:
            return found
        rpu = int(override.requests_per_unit)
        stats = self.config.stats.rule(domain, stats_key)
        limit = RateLimit(
            full_key=f"{domain}.{stats_key}",
            domain=domain,
            requests_per_unit=rpu,
            unit=unit,
            window_ms=window_s * 1000,
            current_limit=_limit_proto(rpu, unit, ""),
            stats=stats,
        )
        match = Match(limit, stats, stats_key)
        if len(self._overrides) >= _OVERRIDE_CACHE_MAX:
            self._overrides.clear()
        self._overrides[cache_key] = match
        return match
