"""A tenant's requests per minute, counted in Redis in blocks (issue 23: submit rate).

Every request used to make its own INCRBY on the tenant's minute key before its INSERT: a Redis
round trip per create, ~a fifth of the API's CPU for a create. While a tenant is far from its
limit, an API process now takes a block of counts with one INCRBY and hands them to its requests
one by one, so most requests make no round trip for the limit. Near the limit, and for a
process's first request of a minute (it does not know the count yet), each request is counted
alone, as before: exact where it decides a 429.

What a count means is unchanged: each request gets its own number in Redis's one order across
every API process (a count handed out is one Redis counted), and a request whose number is over
the limit is refused (429) and stays counted. What a process took and has not handed out by the
end of the minute was counted but never used: a tenant may be refused up to that many requests
early. The block is kept small against what is left — at most ``1/SHARE`` of what was left of the
limit when it was taken, and at most ``MOST`` — so the counts left unused across processes stay a
small fraction of the limit (none below ``2 * SHARE`` left, where blocks stop).

Pure asyncio: the count in Redis is the caller's (``count(key, n)``: INCRBY ``n``, the new count).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

SHARE = 256  # a block is at most this part of what was left of the limit
MOST = 32  # and at most this many counts


def block_size(limit: int, counted: int) -> int:
    """How many counts to take at once, ``counted`` being the highest count this process saw on
    the key: 1 (each request alone) within ``2 * SHARE`` of the limit."""
    return max(1, min(MOST, (limit - counted) // SHARE))


class _Taking:
    """A block being taken: the requests that wait for it are woken when it is in (or failed)."""

    def __init__(self):
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class RateBlocks:
    """One API process's blocks, for the keys of one minute at a time (an earlier minute's are
    dropped when a later minute's first request comes)."""

    def __init__(self, count: Callable[[str, int], Awaitable[int]]):
        self._count = count
        self._minute = -1
        self._held: dict[str, tuple[int, int]] = {}  # key -> (next count to hand out, last one taken)
        self._seen: dict[str, int] = {}  # key -> the highest count Redis answered this process
        self._taking: dict[str, _Taking] = {}

    async def next_count(self, key: str, minute: int, limit: int) -> int:
        """This request's count on ``key`` (its minute's number ``minute``): from the process's
        block when it holds one, else from Redis. Redis's failure is raised (the caller decides)."""
        if minute > self._minute:
            self._minute, self._held, self._seen, self._taking = minute, {}, {}, {}
        elif minute < self._minute:  # a request that began in the minute before: counted alone
            return await self._count(key, 1)
        while True:
            held = self._held.get(key)
            if held is not None and held[0] <= held[1]:
                self._held[key] = (held[0] + 1, held[1])
                return held[0]
            size = block_size(limit, self._seen.get(key, limit))  # unseen: counted alone first
            if size == 1:
                return self._remember(key, await self._count(key, 1))
            taking = self._taking.get(key)
            if taking is None:
                return await self._take(key, size)
            await taking.done.wait()  # then take from it, or take the next block
            if taking.error is not None:
                raise taking.error

    async def _take(self, key: str, size: int) -> int:
        taking = self._taking[key] = _Taking()
        try:
            last = await self._count(key, size)
        except Exception as exc:
            taking.error = exc  # the requests waiting for this block fail as this one does
            raise  # (this request cancelled: they take the next block themselves)
        finally:
            if self._taking.get(key) is taking:
                del self._taking[key]
            taking.done.set()
        self._remember(key, last)
        first = last - size + 1  # this request's; the rest of the block for the next ones
        self._held[key] = (first + 1, last)
        return first

    def _remember(self, key: str, count: int) -> int:
        if count > self._seen.get(key, 0):
            self._seen[key] = count
        return count
