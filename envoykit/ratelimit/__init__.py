"""envoykit.ratelimit: Envoy's global rate-limit service, drop-in for envoyproxy/ratelimit's config.

Public names::

    from envoykit.ratelimit import (
        load_config_dir, load_texts, RateLimitConfig, RateLimitConfigError, Lookup,
        RateLimitService, ServiceSettings, MemoryStore, Store, StoreError, Algorithm,
    )

Redis stores: ``from envoykit.ratelimit.stores.redis import RedisStore, RedisClusterStore``.
"""

from envoykit.ratelimit.algorithms import Algorithm
from envoykit.ratelimit.config import RateLimitConfig, dump, load_config_dir, load_texts
from envoykit.ratelimit.lookup import Lookup
from envoykit.ratelimit.schema import RateLimitConfigError
from envoykit.ratelimit.service import RateLimitService, ServiceSettings
from envoykit.ratelimit.stores import MemoryStore, Store, StoreError

__all__ = [
    "Algorithm",
    "Lookup",
    "MemoryStore",
    "RateLimitConfig",
    "RateLimitConfigError",
    "RateLimitService",
    "ServiceSettings",
    "Store",
    "StoreError",
    "dump",
    "load_config_dir",
    "load_texts",
]
