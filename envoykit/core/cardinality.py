"""Bounded label cardinality for Prometheus series, shared by every server that labels by request facts.

Istio's telemetry labels (workloads, principals, services) come from what peers send, so an unbounded
label set is a memory leak an attacker can drive; each label keeps at most ``max_values`` values.
"""

from __future__ import annotations

#: the value a label takes once its budget is spent, or when it is empty (Istio's spelling)
UNKNOWN = "unknown"
#: longer values are never kept: no real workload or principal name comes close
MAX_VALUE_LENGTH = 256


class LabelGuard:
    """Each label (by position) keeps at most ``max_values`` distinct values; newcomers beyond that,
    empty values and values longer than :data:`MAX_VALUE_LENGTH` characters become ``unknown``.

    Attributes:
        collapsed: how many values were turned into ``unknown`` for the budget or the length.

    Raises:
        ValueError: ``max_values`` below 1.
    """

    def __init__(self, max_values: int = 100) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be at least 1, not {max_values}")
        self.max_values = max_values
        self.seen: dict[int, set[str]] = {}
        self.collapsed = 0

    def __call__(self, index: int, value: str) -> str:
        """``value`` for the label at position ``index``, or ``unknown``."""
        if not value:
            return UNKNOWN
        seen = self.seen.setdefault(index, set())
        if value in seen:
            return value
        if len(seen) >= self.max_values or len(value) > MAX_VALUE_LENGTH:
            self.collapsed += 1
            return UNKNOWN
        seen.add(value)
        return value
