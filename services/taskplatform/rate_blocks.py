"""A tenant's requests per minute, counted in Redis in blocks (issue 23: submit rate).

Every request used to make its own INCRBY on the tenant's minute key before its INSERT: a Redis
round trip per create, ~a fifth of the API's CPU for a create. While a tenant is far from its
limit, an API process now takes a block of counts with one INCRBY and hands them to its requests
one by one, so most requests make no round trip for the limit. Each request is counted alone, as
before, where a block could cost the tenant requests: near the limit, and whenever the process
does not know the count well — its first request of a minute, when its last answer on the key is
older than ``FRESH_SECONDS`` (other processes may have counted since), after a take failed.

What a count means is unchanged: each request gets its own number in Redis's one order across
every API process (a count handed out is one Redis counted), and a request whose number is over
the limit is refused (429) and stays counted. What a process took and has not handed out by the
end of the minute was counted but never used: a tenant may be refused that many requests early,
at most ``MOST`` a process (a block is also at most ``1/SHARE`` of what was left as the process
last saw it: none within ``2 * SHARE`` of the limit, so a limit under 512 a minute is exact).

The requests that arrive while a block is being taken wait for it, each at most ``wait_seconds``
(the API's Redis timeout: then it fails, and the caller lets the request through as it does when
Redis is away); a take that fails fails them too.

Pure asyncio: the count in Redis is the caller's (``count(key, n)``: INCRBY ``n``, the new count).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

SHARE = 256  # a block is at most this part of what was left of the limit
MOST = 32  # and at most this many counts
FRESH_SECONDS = 1.0  # a process's last answer on a key older than this: the next request alone


def block_size(limit: int, counted: int | None) -> int:
    """How many counts to take at once, ``counted`` being the count this process last saw on the
    key (None: not known well enough): 1 (each request alone) within ``2 * SHARE`` of the limit."""
    if counted is None:
        return 1
    return max(1, min(MOST, (limit - counted) // SHARE))


class _Taking:
    """A block being taken: the requests that wait for it are woken when it is in (or failed)."""

    def __init__(self):
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class RateBlocks:
    """One API process's blocks, for the keys of one minute at a time (an earlier minute's are
    dropped when a later minute's first request comes)."""

    def __init__(self, count: Callable[[str, int], Awaitable[int]], wait_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self._count, self.wait_seconds, self._clock = count, wait_seconds, clock
        self._minute = -1
        self._held: dict[str, tuple[int, int]] = {}  # key -> (next count to hand out, last one taken)
        self._seen: dict[str, tuple[int, float]] = {}  # key -> (the highest count Redis answered, when)
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
            taking = self._taking.get(key)
            if taking is None:
                size = block_size(limit, self._known_count(key))
                if size == 1:
                    return self._remember(key, await self._count(key, 1))
                return await self._take(key, size)
            try:  # then take from it, or take the next block
                async with asyncio.timeout(self.wait_seconds):
                    await taking.done.wait()
            except TimeoutError:
                raise TimeoutError(f"the rate count's block was not in within {self.wait_seconds} s") from None
            if taking.error is not None:
                raise ConnectionError(f"the rate count's block was not taken: {taking.error!r}") from None

    async def _take(self, key: str, size: int) -> int:
        taking = self._taking[key] = _Taking()
        try:
            last = await self._count(key, size)
        except BaseException as exc:
            # Redis may still count it (a timeout): the next request goes alone, as no block
            # should be taken on what this process no longer knows.
            self._seen.pop(key, None)
            if isinstance(exc, Exception):
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

    def _known_count(self, key: str) -> int | None:
        seen = self._seen.get(key)
        return seen[0] if seen is not None and self._clock() - seen[1] <= FRESH_SECONDS else None

    def _remember(self, key: str, count: int) -> int:
        seen = self._seen.get(key)
        self._seen[key] = (max(count, seen[0]) if seen else count, self._clock())
        return count
