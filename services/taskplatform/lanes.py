"""A worker's queues: one ``Lane`` per queue, each with its own slots, rate limit and backlog.

Why a lane per queue: with one pool of slots, a flood of a slow kind takes every slot and a fast
kind's tasks wait behind it however few they are. Here a queue's tasks only ever take that
queue's slots (``RuntimeConfig.concurrency_of``), read from that queue's streams
(``queue.queue_streams``), so a queue at its limit leaves the others' slots free.

The concurrency is per worker, the rate limit the cluster's (``queue_rate``; ``TokenBucket``
here is a worker's own, used while Redis is away); both are read from the applied runtime config
at every decision, so a change (Consul, the file) applies with the next start, without a
restart: a lowered concurrency lets running attempts finish and starts nothing new until the
queue is under it again.

Pure bookkeeping: no Redis, no PostgreSQL (the worker does the I/O), so it is tested without
either.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from taskplatform import queue


class TokenBucket:
    """Starts per second at most ``rate`` (given at each call, so a change applies at once).
    It holds a tenth of a second's worth of starts, at least one: after an idle spell a queue
    may start that many at once, never a whole second's worth."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.tokens: float | None = None  # None: full (first use)
        self.at = clock()

    @staticmethod
    def capacity(rate: float) -> float:
        return max(1.0, rate / 10)

    def _refill(self, rate: float) -> float:
        now = self.clock()
        full = self.capacity(rate)
        self.tokens = full if self.tokens is None else min(full, self.tokens + (now - self.at) * rate)
        self.at = now
        return self.tokens

    def wait(self, rate: float | None) -> float:
        """Seconds until a start is allowed (0: now)."""
        if rate is None:
            return 0.0
        tokens = self._refill(rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / rate

    def available(self, rate: float | None, most: int) -> int:
        """How many starts are allowed now, at most ``most``."""
        if rate is None:
            return most
        return min(most, int(self._refill(rate)))

    def take(self, rate: float | None) -> None:
        if rate is not None:
            self._refill(rate)
            self.tokens -= 1


class Waiting(NamedTuple):
    """A task taken but not started: its message (None when recovered from PostgreSQL), its id
    and its priority (the band's lowest for a message: a stream says no more)."""
    message: queue.Message | None
    task_id: str
    priority: int


class Lane:
    """One queue in one worker: its streams (highest band first), the attempts it runs, and what
    it took but has not started yet, highest priority first, then first come."""

    def __init__(self, name: str, colour: str = ""):
        self.name = name
        self.streams = queue.queue_streams(name, colour)
        self.running: set = set()  # the asyncio tasks of its attempts
        self.bucket = TokenBucket()
        self.redis_ok = True  # its last read of Redis succeeded (the worker's to say)
        self.rate_fallback = False  # its rate limit is this worker's own bucket (Redis away)
        # Its backlog was just filled by a read that asked its higher bands first (the worker's
        # to say): what it took may start without another look at them.
        self.just_read = False
        self._backlog: list[tuple[int, int, Waiting]] = []
        self._order = itertools.count()

    def free(self, concurrency: int) -> int:
        return concurrency - len(self.running)

    def add(self, waiting: Waiting) -> None:
        heapq.heappush(self._backlog, (-waiting.priority, next(self._order), waiting))

    def pop(self) -> Waiting:
        return heapq.heappop(self._backlog)[2]

    def peek(self) -> Waiting:
        return self._backlog[0][2]

    def __len__(self) -> int:
        return len(self._backlog)

    def streams_above(self, priority: int) -> list[str]:
        """Its streams of the bands above ``priority``'s, highest first: what may hold a task
        that should start before one of ``priority`` waiting here."""
        bands = [lowest for _, lowest in queue.BANDS if lowest > priority]
        return [stream for stream in self.streams if priority_of_stream(stream) in bands]


def priority_of_stream(stream: str) -> int:
    """The priority a message's stream stands for (its band's lowest)."""
    parts = stream.split(":")  # tasks:queue:<queue>:<band>[:<colour>] or tasks:stream[:<colour>]
    if len(parts) >= 4 and parts[1] == "queue":
        return dict(queue.BANDS).get(parts[3], queue.DEFAULT_PRIORITY)
    return queue.DEFAULT_PRIORITY  # the default queue's normal band


class Lanes:
    """Every queue of a worker by name: the queues its kinds declare (``kinds.queues()``)."""

    def __init__(self, names: list[str], colour: str = ""):
        self.by_name = {name: Lane(name, colour) for name in names}
        self.by_stream = {stream: lane for lane in self.by_name.values() for stream in lane.streams}

    def __iter__(self) -> Iterator[Lane]:
        return iter(self.by_name.values())

    def __getitem__(self, name: str) -> Lane:
        return self.by_name[name]

    def route(self, queue_name: str | None) -> Lane:
        """The lane of a queue; the default queue's for one this worker does not run."""
        lane = self.by_name.get(queue_name or queue.DEFAULT_QUEUE)
        return lane if lane is not None else self.by_name[queue.DEFAULT_QUEUE]  # not `or`: an empty lane is falsy

    @property
    def streams(self) -> list[str]:
        return list(self.by_stream)

    def backlog_size(self) -> int:
        return sum(len(lane) for lane in self)
