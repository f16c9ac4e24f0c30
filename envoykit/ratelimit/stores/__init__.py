"""Counter stores behind one protocol: in-memory (default), Redis, Redis Cluster."""

from envoykit.ratelimit.stores.base import Store, StoreError
from envoykit.ratelimit.stores.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "StoreError"]
