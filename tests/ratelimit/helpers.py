"""Helpers for the ratelimit tests: fixture lookup, request builders, a controllable clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance" / "ratelimit"
LOADER = CONFORMANCE / "loader"

needs_conformance = pytest.mark.skipif(
    not LOADER.is_dir(), reason=f"conformance fixtures not found at {LOADER} (shared/ beside the clone)"
)

Unit = rls_pb2.RateLimitResponse.RateLimit.Unit
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


def descriptor(
    *entries: tuple[str, str], limit: tuple[int, int] | None = None, hits_addend: int | None = None
) -> ratelimit_pb2.RateLimitDescriptor:
    """A RateLimitDescriptor from (key, value) pairs; ``limit`` = (requests_per_unit, unit)."""
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if limit is not None:
        d.limit.requests_per_unit, d.limit.unit = limit
    if hits_addend is not None:
        d.hits_addend.value = hits_addend
    return d


def request(
    domain: str, *descs: ratelimit_pb2.RateLimitDescriptor, hits_addend: int = 0
) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=list(descs), hits_addend=hits_addend)


class Clock:
    """A clock the test moves: ``now`` in seconds since the epoch."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
