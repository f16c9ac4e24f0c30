"""Redis and Redis Cluster counters (redis-py), one round trip per request.

All hits of a request go to Redis as one Lua script call (EVALSHA), which runs the same arithmetic
as :mod:`envoykit.ratelimit.algorithms` atomically; the caller's clock is passed in, so every
ratelimit process sharing a Redis uses the same windows (keep clocks in sync, as with the
reference). Every key gets a TTL inside the same script, so counters always expire.

On Redis Cluster the hits are grouped by hash slot (each counter's keys share one slot through the
``{...}`` tag of its key), one script call per slot; ``stop_when_over`` then holds per slot group.

Failure: connect and socket timeouts (``timeout_s``), a bounded connection pool where waiting for a
free connection is bounded too, and no retries; any failure raises
:class:`~envoykit.ratelimit.stores.base.StoreError`, within about ``2 * timeout_s`` at worst.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from envoykit.ratelimit.algorithms import Algorithm, Count, Hit, window_start
from envoykit.ratelimit.stores.base import StoreError

# One call carries the hits of one or more requests (the format allows batching requests).
# KEYS, per hit: fixed [base|window_start]; sliding [base|window_start, base|previous_start]; gcra [base|g].
# ARGV, per request: hit count, stop_when_over (0/1), now_ms, then per hit: algorithm, addend,
# limit, window_ms. Returns per hit, in order: before, after, reset_ms.
LUA = """
local out = {}
local ai = 1
local ki = 1
while ai <= #ARGV do
  local n = tonumber(ARGV[ai])
  local stop = ARGV[ai + 1] == '1'
  local now = tonumber(ARGV[ai + 2])
  ai = ai + 3
  local writes = {}
  local any_over = false
  for i = 1, n do
    local algo = tonumber(ARGV[ai])
    local add = tonumber(ARGV[ai + 1])
    local lim = tonumber(ARGV[ai + 2])
    local win = tonumber(ARGV[ai + 3])
    ai = ai + 4
    local before, after, reset
    if algo == 0 then
      local k = KEYS[ki]
      ki = ki + 1
      reset = win - now % win
      if stop or add == 0 then
        before = tonumber(redis.call('GET', k) or '0')
        after = before + add
        if add > 0 then writes[#writes + 1] = {k, add, win} end
      else
        after = redis.call('INCRBY', k, add)
        if after == add then redis.call('PEXPIRE', k, win) end
        before = after - add
      end
    elseif algo == 1 then
      local cur = KEYS[ki]
      local prev = KEYS[ki + 1]
      ki = ki + 2
      local elapsed = now % win
      local p = tonumber(redis.call('GET', prev) or '0')
      local c = tonumber(redis.call('GET', cur) or '0')
      before = math.floor(p * (win - elapsed) / win) + c
      after = before + add
      reset = win - elapsed
      if after <= lim and add > 0 then writes[#writes + 1] = {cur, add, 2 * win} end
    else
      local k = KEYS[ki]
      ki = ki + 1
      if lim <= 0 then
        before = 0
        after = add
        reset = win
      else
        local interval = win / lim
        local tat = tonumber(redis.call('GET', k) or '0')
        if tat < now then tat = now end
        before = math.ceil((tat - now) / interval - 1e-9)
        if before < 0 then before = 0 end
        after = before + add
        reset = math.ceil(tat - now)
        if after <= lim then
          local nt = tat + add * interval
          reset = math.ceil(nt - now)
          if add > 0 then writes[#writes + 1] = {k, nt, -1, math.ceil(nt - now) + 1} end
        end
      end
    end
    if after > lim then any_over = true end
    out[#out + 1] = before
    out[#out + 1] = after
    out[#out + 1] = reset
  end
  if not (stop and any_over) then
    for _, w in ipairs(writes) do
      if w[3] == -1 then
        redis.call('SET', w[1], string.format('%.3f', w[2]), 'PX', w[4])
      else
        local v = redis.call('INCRBY', w[1], w[2])
        if v == w[2] then redis.call('PEXPIRE', w[1], w[3]) end
      end
    end
  end
end
return out
"""


def encode_into(
    keys: list[str], argv: list[int], hits: Sequence[Hit], now_ms: int, stop_when_over: bool
) -> None:
    """Append one request's KEYS and ARGV for ``hits``."""
    argv.append(len(hits))
    argv.append(1 if stop_when_over else 0)
    argv.append(now_ms)
    for h in hits:
        win = h.window_ms
        if h.algorithm == Algorithm.FIXED_WINDOW:
            keys.append(f"{h.key}|{window_start(now_ms, win)}")
        elif h.algorithm == Algorithm.SLIDING_WINDOW:
            ws = window_start(now_ms, win)
            keys.append(f"{h.key}|{ws}")
            keys.append(f"{h.key}|{ws - win}")
        else:
            keys.append(f"{h.key}|g")
        argv.extend((int(h.algorithm), h.addend, h.limit, win))


def encode(hits: Sequence[Hit], now_ms: int, stop_when_over: bool) -> tuple[list[str], list[int]]:
    """The script's KEYS and ARGV for one request's ``hits`` at ``now_ms``."""
    keys: list[str] = []
    argv: list[int] = []
    encode_into(keys, argv, hits, now_ms, stop_when_over)
    return keys, argv


def decode(flat: Sequence[Any]) -> list[Count]:
    """The script's reply as one Count per hit."""
    return [Count(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]


def _store_error(exc: BaseException) -> StoreError:
    return StoreError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class _Slot:
    """One request waiting for its counts (or for its turn to send for everyone waiting)."""

    __slots__ = ("done", "error", "hits", "lead", "now_ms", "result", "stop")

    def __init__(self, hits: Sequence[Hit], now_ms: int, stop: bool) -> None:
        self.hits = hits
        self.now_ms = now_ms
        self.stop = stop
        self.done = threading.Event()
        self.lead = False
        self.result: list[Count] | None = None
        self.error: StoreError | None = None

    def outcome(self) -> list[Count]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class RedisStore:
    """Counters in one Redis (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://`` paths).

    Args:
        url: the Redis URL.
        max_connections: the pool's bound; a call waits at most ``timeout_s`` for a free connection.
        timeout_s: connect and socket timeout, in seconds.
    """

    name = "redis"

    def __init__(self, url: str, *, max_connections: int = 16, timeout_s: float = 0.5) -> None:
        self.url = url
        self.timeout_s = timeout_s
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.client = Redis(connection_pool=pool)
        self._script = self.client.register_script(LUA)
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._busy = False

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]:
        """Apply ``hits`` (see :class:`~envoykit.ratelimit.stores.base.Store`).

        Requests that arrive while another script call is in flight are combined into the next call
        (the first waiting thread sends for all), like the reference's implicit pipelining: never
        more than one round trip per request, usually fewer under load.
        """
        slot = _Slot(hits, now_ms, stop_when_over)
        with self._lock:
            self._queue.append(slot)
            lead = not self._busy
            self._busy = True
        if not lead:
            slot.done.wait()  # bounded: the sender's call is bounded by the socket timeouts
            if not slot.lead:
                return slot.outcome()
        try:
            with self._lock:
                batch, self._queue = self._queue, []
            self._send(batch)
        finally:
            with self._lock:
                if self._queue:  # hand the sending over to the first waiting request
                    nxt = self._queue[0]
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._busy = False
        return slot.outcome()

    def _send(self, batch: list[_Slot]) -> None:
        keys: list[str] = []
        argv: list[int] = []
        for s in batch:
            encode_into(keys, argv, s.hits, s.now_ms, s.stop)
        try:
            counts = decode(self._script(keys=keys, args=argv))
        except Exception as exc:  # every waiter must be released, whatever failed
            err = _store_error(exc) if isinstance(exc, RedisError | OSError) else StoreError(repr(exc))
            for s in batch:
                s.error, s.lead = err, False
                s.done.set()
            return
        i = 0
        for s in batch:
            s.result, s.lead = counts[i : i + len(s.hits)], False
            i += len(s.hits)
            s.done.set()

    def ping(self) -> bool:
        """True when Redis answers PING within the timeout."""
        try:
            return bool(self.client.ping())
        except (RedisError, OSError):
            return False

    def close(self) -> None:
        """Close the pool's connections."""
        self.client.close()


class RedisClusterStore:
    """Counters in a Redis Cluster (``redis://host:port`` of any node; the rest are discovered).

    Args:
        url: a node's URL.
        max_connections: the bound per node.
        timeout_s: connect and socket timeout, in seconds.
    """

    name = "redis_cluster"

    def __init__(self, url: str, *, max_connections: int = 16, timeout_s: float = 0.5) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.client = RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self.client.register_script(LUA)

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]:
        """Apply ``hits``: one script call per hash slot."""
        groups: dict[int, list[int]] = {}
        for i, h in enumerate(hits):
            groups.setdefault(key_slot(h.key.encode()), []).append(i)
        counts: list[Count] = [Count(0, 0, 0)] * len(hits)
        try:
            for idx in groups.values():
                part = [hits[i] for i in idx]
                keys, argv = encode(part, now_ms, stop_when_over)
                for i, c in zip(idx, decode(self._script(keys=keys, args=argv)), strict=True):
                    counts[i] = c
        except (RedisError, OSError) as exc:
            raise _store_error(exc) from exc
        return counts

    def close(self) -> None:
        """Close every node's connections."""
        self.client.close()
