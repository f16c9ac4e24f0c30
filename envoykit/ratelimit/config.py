"""Load a directory of envoyproxy/ratelimit YAML files into a lookup tree, checked as the reference does.

One file per domain (``*.yaml`` / ``*.yml``, read in name order). With ``merge_domains`` several files
may add descriptors to one domain; otherwise a second file with the same domain is an error. The
whole set fails on the first error (a :class:`~envoykit.ratelimit.schema.RateLimitConfigError` naming
the file, line and field path), so a reload either swaps in a complete new tree or keeps the old one.

Checks, in the reference's order: empty domain, duplicate domain; then per descriptor, depth first:
empty key, duplicate composite key (``key`` or ``key_value``), unit (``unlimited`` with a unit, or
an unknown unit), ``replaces`` entries, ``share_threshold`` on a value without ``*``, ``metadata``.
Lookups live in :mod:`envoykit.ratelimit.lookup`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envoy.service.ratelimit.v3 import rls_pb2

from envoykit.ratelimit.algorithms import ALGORITHM_BY_NAME, UNIT_BY_NAME, UNIT_SECONDS, Algorithm
from envoykit.ratelimit.metrics import RuleStats, StatsRegistry
from envoykit.ratelimit.schema import DescriptorSpec, FileSpec, RateLimitConfigError, parse_file

CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass(eq=False, slots=True)
class RateLimit:
    """A compiled ``rate_limit`` (or a limit override from Envoy).

    ``full_key`` is the stats key (``domain.key1_value1.subkey1``); ``window_ms`` the unit's length;
    ``current_limit`` the prebuilt ``RateLimitResponse.RateLimit`` sent back to Envoy.
    """

    full_key: str
    domain: str
    requests_per_unit: int
    unit: int
    window_ms: int
    unlimited: bool = False
    shadow_mode: bool = False
    quota_mode: bool = False
    name: str = ""
    replaces: frozenset[str] = frozenset()
    detailed_metric: bool = False
    algorithm: Algorithm = Algorithm.FIXED_WINDOW
    metadata: dict[str, Any] | None = None
    current_limit: rls_pb2.RateLimitResponse.RateLimit = field(
        default_factory=rls_pb2.RateLimitResponse.RateLimit
    )
    stats: RuleStats | None = None


@dataclass(eq=False, slots=True)
class Match:
    """The outcome of a lookup: the rule, the stats it counts into, and share_threshold patterns.

    ``share_patterns[i]``, when not empty, replaces entry ``i``'s value in the counter key, so every
    value matching that wildcard shares one counter.
    """

    limit: RateLimit
    stats: RuleStats
    stats_key: str
    share_patterns: tuple[str, ...] | None = None


@dataclass(eq=False, slots=True)
class Node:
    """One level of a domain's descriptor tree.

    ``children`` by composite key (``key`` or ``key_value``); ``wildcards`` holds the children whose
    value contains ``*`` as (composite pattern, compiled regex, node), in file order.
    """

    children: dict[str, Node] = field(default_factory=dict)
    wildcards: list[tuple[str, re.Pattern[str], Node]] = field(default_factory=list)
    limit: RateLimit | None = None
    match: Match | None = None
    value_to_metric: bool = False
    share_threshold: bool = False
    wildcard_pattern: str = ""
    metadata: dict[str, Any] | None = None


@dataclass(eq=False)
class RateLimitConfig:
    """Every domain's tree, the files it came from, and the stats registry its rules count into."""

    domains: dict[str, Node]
    files: tuple[str, ...]
    stats: StatsRegistry


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches zero or more characters, anywhere; everything else is literal."""
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def _limit_proto(rpu: int, unit: int, name: str) -> rls_pb2.RateLimitResponse.RateLimit:
    return rls_pb2.RateLimitResponse.RateLimit(requests_per_unit=rpu, unit=unit, name=name)  # type: ignore[arg-type]


class _Builder:
    def __init__(self, stats: StatsRegistry, merge_domains: bool) -> None:
        self.stats = stats
        self.merge = merge_domains
        self.domains: dict[str, Node] = {}

    def add_file(self, spec: FileSpec) -> None:
        if spec.domain == "":
            raise RateLimitConfigError("config file cannot have empty domain", file=spec.name, field="domain")
        node = self.domains.get(spec.domain)
        if node is not None and not self.merge:
            raise RateLimitConfigError(
                f"duplicate domain '{spec.domain}' in config file", file=spec.name, field="domain"
            )
        if node is None:
            node = self.domains[spec.domain] = Node()
        self._load(spec, spec.domain, node, spec.domain + ".", spec.descriptors)

    def _err(self, spec: FileSpec, d: DescriptorSpec, message: str, sub: str = "") -> RateLimitConfigError:
        return RateLimitConfigError(message, file=spec.name, line=d.line, field=d.path + sub)

    def _load(
        self, spec: FileSpec, domain: str, parent: Node, parent_key: str, descs: tuple[DescriptorSpec, ...]
    ) -> None:
        for d in descs:
            if d.key == "":
                raise self._err(spec, d, "descriptor has empty key")
            final_key = d.key if d.value == "" else f"{d.key}_{d.value}"
            full_key = parent_key + final_key
            if final_key in parent.children:
                raise self._err(spec, d, f"duplicate descriptor composite key '{full_key}'")
            limit = self._rate_limit(spec, d, domain, full_key) if d.rate_limit is not None else None
            if d.share_threshold and "*" not in d.value:
                raise self._err(
                    spec,
                    d,
                    "share_threshold can only be used with wildcard values (containing '*'), "
                    f"but found key '{final_key}'",
                    ".share_threshold",
                )
            node = Node(
                limit=limit,
                value_to_metric=d.value_to_metric,
                share_threshold=d.share_threshold,
                wildcard_pattern=final_key if d.share_threshold else "",
                metadata=d.metadata,
            )
            if limit is not None:
                assert limit.stats is not None
                node.match = Match(limit, limit.stats, full_key[len(domain) + 1 :])
            if "*" in d.value:
                parent.wildcards.append((final_key, wildcard_regex(final_key), node))
            self._load(spec, domain, node, full_key + ".", d.descriptors)
            parent.children[final_key] = node

    def _rate_limit(self, spec: FileSpec, d: DescriptorSpec, domain: str, full_key: str) -> RateLimit:
        rl = d.rate_limit
        assert rl is not None

        def err(message: str, sub: str) -> RateLimitConfigError:
            return RateLimitConfigError(
                message, file=spec.name, line=rl.line, field=f"{d.path}.rate_limit.{sub}"
            )

        unit = UNIT_BY_NAME.get(rl.unit.upper(), 0)
        if rl.unlimited:
            if unit:
                raise err("should not specify rate limit unit when unlimited", "unit")
        elif not unit:
            raise err(f"invalid rate limit unit '{rl.unit}'", "unit")
        for i, rep in enumerate(rl.replaces):
            if rep.name == "":
                raise err("should not have an empty replaces entry", f"replaces.{i}")
            if rep.name == rl.name:
                raise err("replaces should not contain name of same descriptor", f"replaces.{i}")
        algorithm = ALGORITHM_BY_NAME.get(rl.algorithm)
        if algorithm is None:
            raise err(
                f"invalid algorithm '{rl.algorithm}' (fixed_window, sliding_window or gcra)", "algorithm"
            )
        stats_key = full_key[len(domain) + 1 :]
        return RateLimit(
            full_key=full_key,
            domain=domain,
            requests_per_unit=rl.requests_per_unit,
            unit=unit,
            window_ms=UNIT_SECONDS.get(unit, 1) * 1000,
            unlimited=rl.unlimited,
            shadow_mode=d.shadow_mode,
            quota_mode=d.quota_mode,
            name=rl.name,
            replaces=frozenset(r.name for r in rl.replaces),
            detailed_metric=d.detailed_metric,
            algorithm=algorithm,
            metadata=d.metadata,
            current_limit=_limit_proto(rl.requests_per_unit, unit, rl.name),
            stats=self.stats.rule(domain, stats_key),
        )


def load_texts(
    files: list[tuple[str, str]], *, merge_domains: bool = False, stats: StatsRegistry | None = None
) -> RateLimitConfig:
    """Build a config from ``(name, yaml_text)`` pairs, in the order given.

    Raises:
        RateLimitConfigError: the first problem found, naming the file, line and field path.
    """
    builder = _Builder(stats if stats is not None else StatsRegistry(), merge_domains)
    for name, text in files:
        builder.add_file(parse_file(name, text))
    return RateLimitConfig(builder.domains, tuple(n for n, _ in files), builder.stats)


def config_files(config_dir: Path) -> list[Path]:
    """The YAML files of a config directory (recursively), sorted by path; hidden files skipped."""
    return sorted(
        p
        for p in config_dir.rglob("*")
        if p.suffix in CONFIG_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(config_dir).parts)
    )


def load_config_dir(
    config_dir: str | Path, *, merge_domains: bool = False, stats: StatsRegistry | None = None
) -> RateLimitConfig:
    """Load every YAML file under ``config_dir`` (or the single file it names).

    Raises:
        RateLimitConfigError: a file cannot be read or fails a check (file, line, field, message).
    """
    root = Path(config_dir)
    if not root.exists():
        raise RateLimitConfigError("no such file or directory", file=str(root))
    paths = [root] if root.is_file() else config_files(root)
    texts = []
    for p in paths:
        try:
            texts.append((str(p), p.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            raise RateLimitConfigError(f"error loading config file: {exc}", file=str(p)) from exc
    return load_texts(texts, merge_domains=merge_domains, stats=stats)


def rules(config: RateLimitConfig) -> list[dict[str, Any]]:
    """Every rule of ``config`` as plain data (for ``check -o json``), domains in name order.

    Each: ``domain``, ``key`` (the full key without the domain), ``unlimited``, ``unit`` and
    ``requests_per_unit`` (both None for an unlimited rule), ``shadow_mode``, ``quota_mode``,
    ``detailed_metric``, ``algorithm``, ``name``, ``replaces``.
    """
    out: list[dict[str, Any]] = []

    def walk(domain: str, node: Node) -> None:
        for child in node.children.values():
            lim = child.limit
            if lim is not None:
                unit_name = rls_pb2.RateLimitResponse.RateLimit.Unit.Name(lim.unit)  # type: ignore[arg-type]
                unit = None if lim.unlimited else unit_name
                out.append(
                    {
                        "domain": domain,
                        "key": lim.full_key.removeprefix(domain + "."),
                        "unlimited": lim.unlimited,
                        "unit": unit,
                        "requests_per_unit": None if lim.unlimited else lim.requests_per_unit,
                        "shadow_mode": lim.shadow_mode,
                        "quota_mode": lim.quota_mode,
                        "detailed_metric": lim.detailed_metric,
                        "algorithm": lim.algorithm.name.lower(),
                        "name": lim.name or None,
                        "replaces": sorted(lim.replaces),
                    }
                )
            walk(domain, child)

    for name in sorted(config.domains):
        walk(name, config.domains[name])
    return out


def dump(config: RateLimitConfig) -> list[str]:
    """One line per rule: ``domain.key: unit=… requests_per_unit=…`` (or ``unlimited``) and its flags."""
    lines: list[str] = []
    for r in rules(config):
        head = (
            "unlimited" if r["unlimited"] else f"unit={r['unit']} requests_per_unit={r['requests_per_unit']}"
        )
        flags = [n for n in ("shadow_mode", "quota_mode", "detailed_metric") if r[n]]
        if r["algorithm"] != Algorithm.FIXED_WINDOW.name.lower():
            flags.append(r["algorithm"])
        if r["name"]:
            flags.append(f"name={r['name']}")
        if r["replaces"]:
            flags.append("replaces=" + ",".join(r["replaces"]))
        extra = (" " + " ".join(flags)) if flags else ""
        lines.append(f"{r['domain']}.{r['key']}: {head}{extra}")
    return lines
