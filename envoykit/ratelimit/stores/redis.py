"""Redis and Redis Cluster counters (redis-py), one round trip per request.

All hits of a request go to Redis as one Lua script call (EVALSHA), which runs the same arithmetic
as :mod:`envoykit.ratelimit.algorithms` atomically; the caller's clock is passed in, so every
ratelimit process sharing a Redis uses the same windows (keep clocks in sync, as with the
reference). Every key gets a TTL inside the same script, so counters always expire.

On Redis Cluster the hits are grouped by hash slot (each counter's keys share one slot through the
``{...}`` tag of its key), one script call per slot; ``stop_when_over`` then holds per slot group.

Failure: connect and socket timeouts (``timeout_s``), a bounded connection pool, no retries, and a
call never waits longer than ``timeout_s`` (:mod:`envoykit.ratelimit.stores.sender`): any failure
raises :class:`~envoykit.ratelimit.stores.base.StoreError` within it, and while the store is down
calls fail at once.

:class:`RedisStore` also serves the lean server's event loop (:meth:`RedisStore.apply_async`): the
same script through redis-py's asyncio client, under the same bound
(:mod:`envoykit.ratelimit.stores.loopsender`), so a call crosses no thread (issue 13).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import BlockingConnectionPool, Redis
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry as LoopRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from envoykit.ratelimit.algorithms import Algorithm, Count, Hit, window_start
from envoykit.ratelimit.stores.base import StoreError
from envoykit.ratelimit.stores.loopsender import LoopSender
from envoykit.ratelimit.stores.sender import BoundedSender

# One call carries the hits of one or more requests (the format allows batching requests).
# KEYS, per hit: fixed [base|window_start]; sliding [base|window_start, base|previous_start]; gcra [base|g].
# ARGV, per request: hit count, stop_when_over (0/1), now_ms, then per hit: algorithm, addend,
# limit, window_ms, mode (0 enforced, -1 shadow, g >= 1 quota group). Returns per hit, in order:
# before, after, reset_ms. With stop_when_over the writes follow algorithms.counted_when_stopping.
LUA = """
local out = {}
local ai = 1
local ki = 1
local function write(w)
  if w[3] == -1 then
    redis.call('SET', w[1], string.format('%.3f', w[2]), 'PX', w[4])
  else
    local v = redis.call('INCRBY', w[1], w[2])
    if v == w[2] then redis.call('PEXPIRE', w[1], w[3]) end
  end
end
while ai <= #ARGV do
  local n = tonumber(ARGV[ai])
  local stop = ARGV[ai + 1] == '1'
  local now = tonumber(ARGV[ai + 2])
  ai = ai + 3
  local base = #out
  local writes = {}
  local over = {}
  local modes = {}
  for i = 1, n do
    local algo = tonumber(ARGV[ai])
    local add = tonumber(ARGV[ai + 1])
    local lim = tonumber(ARGV[ai + 2])
    local win = tonumber(ARGV[ai + 3])
    modes[i] = tonumber(ARGV[ai + 4])
    ai = ai + 5
    local before, after, reset
    if algo == 0 then
      local k = KEYS[ki]
      ki = ki + 1
      reset = win - now % win
      if stop or add == 0 then
        before = tonumber(redis.call('GET', k) or '0')
        after = before + add
        if add > 0 then writes[#writes + 1] = {k, add, win, i} end
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
      if after <= lim and add > 0 then writes[#writes + 1] = {cur, add, 2 * win, i} end
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
          if add > 0 then writes[#writes + 1] = {k, nt, -1, math.ceil(nt - now) + 1, i} end
        end
      end
    end
    over[i] = after > lim
    out[#out + 1] = before
    out[#out + 1] = after
    out[#out + 1] = reset
  end
  if stop then
    local refused = false
    local groups = {}
    local any_group = false
    for i = 1, n do
      local m = modes[i]
      if m == 0 and over[i] then refused = true end
      if m > 0 then
        any_group = true
        groups[m] = groups[m] or over[i]
      end
    end
    if any_group and not refused then
      refused = true
      for _, g_over in pairs(groups) do
        if not g_over then refused = false end
      end
    end
    local counted = {}
    for i = 1, n do
      counted[i] = not refused and not over[i] and not (modes[i] > 0 and groups[modes[i]])
      if not counted[i] and not over[i] then out[base + 3 * i - 1] = out[base + 3 * i - 2] end
    end
    for _, w in ipairs(writes) do
      if counted[w[#w]] then write(w) end
    end
  else
    for _, w in ipairs(writes) do write(w) end
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
        argv.extend((int(h.algorithm), h.addend, h.limit, win, h.mode))


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


_Request = tuple[Sequence[Hit], int, bool]  # hits, now_ms, stop_when_over


def _split(batch: Sequence[_Request], counts: list[Count]) -> list[list[Count]]:
    out: list[list[Count]] = []
    i = 0
    for hits, _, _ in batch:
        out.append(counts[i : i + len(hits)])
        i += len(hits)
    return out


class RedisStore:
    """Counters in one Redis (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://`` paths).

    Args:
        url: the Redis URL.
        max_connections: the pool's bound (round trips use one connection, probes another).
        timeout_s: connect and socket timeout, in seconds, and the most a call waits
            (see :mod:`envoykit.ratelimit.stores.sender`).
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
        self._sender: BoundedSender[_Request, list[Count]] = BoundedSender(
            "redis", self._send, self.client.ping, timeout_s
        )
        self._max_connections = max_connections
        self._aclient: aioredis.Redis | None = None  # made on the serving loop by apply_async
        self._loop_sender: LoopSender[_Request, list[Count]] | None = None

    async def apply_async(
        self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False
    ) -> list[Count]:
        """:meth:`apply` on the running event loop (the lean server's), crossing no thread.

        Calls made while a script call is in flight go out together in the next one. Use from one
        event loop only. Raises StoreError within ``timeout_s``.
        """
        sender = self._loop_sender
        if sender is None:
            sender = self._start_loop_client()
        return await sender.call((hits, now_ms, stop_when_over))

    def _start_loop_client(self) -> LoopSender[_Request, list[Count]]:
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self._max_connections,
            timeout=self.timeout_s,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=LoopRetry(NoBackoff(), 0),
        )
        client = self._aclient = aioredis.Redis(connection_pool=pool, retry=LoopRetry(NoBackoff(), 0))
        script = client.register_script(LUA)

        async def send(batch: Sequence[_Request]) -> list[list[Count]]:
            keys: list[str] = []
            argv: list[int] = []
            for hits, now_ms, stop in batch:
                encode_into(keys, argv, hits, now_ms, stop)
            try:
                counts = decode(await script(keys=keys, args=argv))
            except (RedisError, OSError) as exc:
                raise _store_error(exc) from exc
            return _split(batch, counts)

        self._loop_sender = LoopSender("redis", send, client.ping, self.timeout_s)
        return self._loop_sender

    async def aclose(self) -> None:
        """Close the event loop's client (call on that loop; :meth:`close` closes the rest)."""
        if self._loop_sender is not None:
            self._loop_sender.close()
        if self._aclient is not None:
            await self._aclient.aclose()

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]:
        """Apply ``hits`` (see :class:`~envoykit.ratelimit.stores.base.Store`).

        Requests that arrive while a script call is in flight go out together in the next call,
        like the reference's implicit pipelining. Raises StoreError within ``timeout_s``.
        """
        return self._sender.call((hits, now_ms, stop_when_over))

    def _send(self, batch: Sequence[_Request]) -> list[list[Count]]:
        keys: list[str] = []
        argv: list[int] = []
        for hits, now_ms, stop in batch:
            encode_into(keys, argv, hits, now_ms, stop)
        try:
            counts = decode(self._script(keys=keys, args=argv))
        except (RedisError, OSError) as exc:
            raise _store_error(exc) from exc
        return _split(batch, counts)

    def ping(self) -> bool:
        """True when Redis answers PING within the timeout."""
        return self.health() is None

    def health(self) -> str | None:
        """None when Redis answers PING within the timeout, else why not (the store is then down)."""
        down = self._sender.down
        if down is None and self._loop_sender is not None:
            down = self._loop_sender.down
        if down is not None:
            return f"redis: {down}"
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            err = _store_error(exc)
            self._sender.mark_down(err)
            return f"redis: {err}"
        return None

    def close(self) -> None:
        """Stop the sender and close the pool's connections."""
        self._sender.close()
        self.client.close()


class RedisClusterStore:
    """Counters in a Redis Cluster (``redis://host:port`` of any node; the rest are discovered).

    Args:
        url: a node's URL.
        max_connections: the bound per node.
        timeout_s: connect and socket timeout, in seconds, and the most a call waits.
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
        self._sender: BoundedSender[_Request, list[Count]] = BoundedSender(
            "redis_cluster", self._send, self.client.ping, timeout_s
        )

    def apply(self, hits: Sequence[Hit], now_ms: int, stop_when_over: bool = False) -> list[Count]:
        """Apply ``hits``: the calls queued meanwhile go out together, one script call per hash slot."""
        return self._sender.call((hits, now_ms, stop_when_over))

    def _send(self, batch: Sequence[_Request]) -> list[list[Count]]:
        by_slot: dict[int, list[tuple[int, list[int]]]] = {}  # slot → [(request, its hit indices)]
        for r, (hits, _, _) in enumerate(batch):
            mine: dict[int, list[int]] = {}
            for i, h in enumerate(hits):
                mine.setdefault(key_slot(h.key.encode()), []).append(i)
            for slot, idx in mine.items():
                by_slot.setdefault(slot, []).append((r, idx))
        results = [[Count(0, 0, 0)] * len(hits) for hits, _, _ in batch]
        try:
            for parts in by_slot.values():
                keys: list[str] = []
                argv: list[int] = []
                for r, idx in parts:
                    hits, now_ms, stop = batch[r]
                    encode_into(keys, argv, [hits[i] for i in idx], now_ms, stop)
                flat = iter(decode(self._script(keys=keys, args=argv)))
                for r, idx in parts:
                    for i in idx:
                        results[r][i] = next(flat)
        except (RedisError, OSError) as exc:
            raise _store_error(exc) from exc
        return results

    def health(self) -> str | None:
        """None when the cluster answers PING within the timeout, else why not."""
        down = self._sender.down
        if down is not None:
            return f"redis_cluster: {down}"
        try:
            self.client.ping()
        except (RedisError, OSError) as exc:
            err = _store_error(exc)
            self._sender.mark_down(err)
            return f"redis_cluster: {err}"
        return None

    def close(self) -> None:
        """Stop the sender and close every node's connections."""
        self._sender.close()
        self.client.close()
