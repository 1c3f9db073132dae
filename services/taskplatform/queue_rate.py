"""A queue's start rate over the whole cluster: one GCRA bucket per queue in Redis, taken by every
worker that runs the queue (both colours during a release), so N workers together start at most
the queue's ``rate_per_second`` however many there are.

GCRA (the generic cell rate algorithm) keeps one number per queue, the theoretical arrival time
(``tat``) of the next start, in microseconds of Redis's own clock (``TIME``: the workers' clocks
never enter). A start is allowed when ``tat - now`` leaves room for it within the burst, and moves
``tat`` on by one emission interval (1/rate). It is the token bucket of ``lanes.TokenBucket``
(capacity a tenth of a second's worth, at least one start) kept in one key and changed by one
Lua script, which Redis runs atomically: two workers can never both take the last start.

The rate is given at each call (read from the applied runtime config at each start decision),
so a change applies at the next start, without a restart: the key holds only ``tat``.

A start taken for a message whose task turns out to be claimed already (a duplicate) is given
back (``give_back``), so duplicates do not eat into the rate.

Redis unavailable: the worker falls back to its own bucket (``lanes.TokenBucket``) at the
queue's rate — the per-worker bound of the releases before this one, so the cluster's bound is
then the rate times the workers for as long as Redis is away. Without Redis a worker reads no
new message anyway; what it still starts are the tasks it recovers from PostgreSQL, and those
must not stop because Redis is away.
"""

from __future__ import annotations

from typing import NamedTuple

import redis.asyncio as redis

KEY_PREFIX = "tasks:rate:"

# KEYS[1]: the queue's key. ARGV: the emission interval (µs per start), the burst (starts that
# may go at once, ≥ 1), the starts wanted (negative: given back). Returns {granted, µs until the
# next start is allowed}.
_TAKE = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if wanted < 0 then
  -- given back: starts taken but not made (the task was claimed elsewhere or is done)
  tat = math.max(now, tat + wanted * interval)
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  return {0, 0}
end
local allowance = (burst - 1) * interval - (tat - now)
local room = 0
if allowance >= 0 then room = math.floor(allowance / interval) + 1 end
local granted = math.min(wanted, room)
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local wait = tat - now - (burst - 1) * interval
if wait < 0 then wait = 0 end
return {granted, math.ceil(wait)}
"""


class Grant(NamedTuple):
    granted: int  # starts allowed now (0 to the number asked)
    wait_seconds: float  # until the next start is allowed (0: one is allowed now)


def burst_of(rate: float) -> float:
    """Starts a queue may make at once after an idle spell: a tenth of a second's worth, at least
    one (``lanes.TokenBucket.capacity``)."""
    return max(1.0, rate / 10)


class ClusterRate:
    """The queues' shared buckets in one Redis (the worker's client)."""

    def __init__(self, client: redis.Redis):
        self._take = client.register_script(_TAKE)

    async def take(self, queue: str, rate: float, wanted: int = 1) -> Grant:
        """Up to ``wanted`` starts of ``queue`` at ``rate`` per second over the cluster; raises
        what the Redis client raises when Redis cannot be reached (the caller falls back)."""
        interval = 1_000_000 / rate
        granted, wait_us = await self._take(keys=[KEY_PREFIX + queue], args=[interval, burst_of(rate), wanted])
        return Grant(int(granted), int(wait_us) / 1_000_000)

    async def give_back(self, queue: str, rate: float, count: int = 1) -> None:
        """Starts taken but not made: the message's task was claimed by another worker or is
        done (a duplicate message, one the reconciler also brought). Without this a duplicate
        would spend a start of the queue's rate on nothing."""
        await self._take(keys=[KEY_PREFIX + queue], args=[1_000_000 / rate, burst_of(rate), -count])
