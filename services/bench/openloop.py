"""Open-loop HTTP/1.1 load at a fixed arrival rate: `make bench-api`'s overload phase.

A closed-loop generator (wrk, or any client that waits for an answer before it sends again)
sends less as soon as the server slows down, and times each request from when it actually went
out: the server's queueing never shows in its figures. Here request i is due at
start + i / rate whatever happened before it; it goes out on an idle keep-alive connection (a
new one is opened when none is idle, up to ``max_connections``; beyond that it waits for one),
and its latency is counted from when it was due, so a late send counts against the figures.

Plain asyncio protocols on uvloop with pre-encoded requests: the generator shares the machine's
CPUs with the server it measures, so it must cost little. Run as a script, it sends creates
(``POST /v1/tasks``, bearer token from BENCH_TOKEN) and prints one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

TICK_S = 0.001  # the loop's timer resolution


@dataclass
class Outcome:
    """Each request's answer: latencies (ms, from when the request was due) by status; status 0
    is a connection lost or refused before an answer."""

    latencies_ms: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    unanswered: int = 0  # still without an answer when the generator gave up waiting
    max_schedule_lag_ms: float = 0.0  # how late the generator itself got to a request, at worst
    waited_for_connection: int = 0  # requests that found all ``max_connections`` busy
    connections: int = 0  # opened in all

    @property
    def sent(self) -> int:
        return sum(map(len, self.latencies_ms.values())) + self.unanswered


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, generator: "_Generator"):
        self.generator = generator
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # when the outstanding request was due
        self.status = 0
        self.length: int | None = None  # of the answer being read (head and body), once its head is in

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.generator.ready(self)

    def send(self, request: bytes, due: float) -> None:
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.length is None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).lower()
            self.status = int(head[9:12])
            at = head.index(b"\r\ncontent-length:") + 17
            self.length = head_end + 4 + int(head[at:].split(b"\r\n", 1)[0])
        if len(self.buffer) < self.length:
            return
        answered_at = time.perf_counter()
        del self.buffer[:self.length]
        self.length, due, self.due = None, self.due, None
        self.generator.answered(self, self.status, answered_at - due)

    def connection_lost(self, exc) -> None:
        self.generator.lost(self)


class _Generator:
    def __init__(self, host: str, port: int, request: Callable[[int], bytes], rate: float, seconds: float,
                 max_connections: int):
        self.host, self.port, self.request = host, port, request
        self.rate, self.total, self.max_connections = rate, int(rate * seconds), max_connections
        self.outcome = Outcome()
        # The longest idle first: every connection stays in use, none is idle long enough for the
        # server's keep-alive timeout to close it just as a request goes out on it.
        self.idle: collections.deque[_Connection] = collections.deque()
        self.waiting: collections.deque[tuple[int, float]] = collections.deque()  # (index, due) without a connection
        self.open = 0  # connections open or being opened
        self.outstanding = 0
        self.dispatched_all = False
        self.all_answered = asyncio.Event()
        self.warm = asyncio.Event()

    def _connect(self) -> None:
        self.open += 1
        self.outcome.connections += 1
        opening = asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host, self.port)
        asyncio.ensure_future(opening).add_done_callback(self._connected)

    def _connected(self, future: asyncio.Future) -> None:
        if future.exception() is not None:
            self.open -= 1
            if self.waiting:  # nothing to send it on: the request gets no answer
                self.waiting.popleft()
                self._record(0, 0.0)
            self._check_warm()

    def _check_warm(self) -> None:
        if len(self.idle) == self.open:
            self.warm.set()

    def dispatch(self, index: int, due: float) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.popleft().send(self.request(index), due)
            return
        self.waiting.append((index, due))
        if self.open < self.max_connections:
            self._connect()
        else:
            self.outcome.waited_for_connection += 1

    def ready(self, conn: _Connection) -> None:
        if self.waiting:
            index, due = self.waiting.popleft()
            conn.send(self.request(index), due)
        else:
            self.idle.append(conn)
            self._check_warm()

    def _record(self, status: int, latency_s: float) -> None:
        self.outcome.latencies_ms[status].append(latency_s * 1000)
        self.outstanding -= 1
        if self.outstanding == 0 and self.dispatched_all:
            self.all_answered.set()

    def answered(self, conn: _Connection, status: int, latency_s: float) -> None:
        self._record(status, latency_s)
        self.ready(conn)

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.due is not None:
            self._record(0, time.perf_counter() - conn.due)

    async def run(self, warm_connections: int, drain_seconds: float) -> Outcome:
        for _ in range(min(warm_connections, self.max_connections)):
            self._connect()
        await self.warm.wait()
        start = time.perf_counter()
        index = 0
        while index < self.total:
            now = time.perf_counter()
            while index < self.total and (due := start + index / self.rate) <= now:
                self.outcome.max_schedule_lag_ms = max(self.outcome.max_schedule_lag_ms, (now - due) * 1000)
                self.dispatch(index, due)
                index += 1
            if index < self.total:
                # A sleep shorter than the timer resolution would spin: what falls due meanwhile
                # goes out together, up to a tick late, and that counts in its latency.
                await asyncio.sleep(max(TICK_S, start + index / self.rate - time.perf_counter()))
        self.dispatched_all = True
        if self.outstanding:
            try:
                await asyncio.wait_for(self.all_answered.wait(), drain_seconds)
            except asyncio.TimeoutError:
                self.outcome.unanswered = self.outstanding
        for conn in self.idle:
            conn.transport.close()
        return self.outcome


def run(host: str, port: int, request: Callable[[int], bytes], rate: float, seconds: float, *,
        max_connections: int = 1024, warm_connections: int = 512, drain_seconds: float = 30.0) -> Outcome:
    """Sends ``rate * seconds`` requests (``request(i)``: the i-th, encoded) at ``rate`` a second,
    then waits up to ``drain_seconds`` for the last answers."""
    generator = _Generator(host, port, request, rate, seconds, max_connections)
    return uvloop.run(generator.run(warm_connections, drain_seconds))


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def create_task_requests(host: str, token: str) -> Callable[[int], bytes]:
    head = (f"POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\n").encode()

    def request(index: int) -> bytes:
        body = b'{"kind":"checksum","payload":{"n":%d}}' % index
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    return request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="the API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, required=True, help="requests a second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-connections", type=int, default=1024)
    parser.add_argument("--warm-connections", type=int, default=512, help="opened before the first request")
    args = parser.parse_args()
    target = urlsplit(args.url)
    outcome = run(target.hostname, target.port, create_task_requests(target.netloc, os.environ["BENCH_TOKEN"]),
                  args.rate, args.seconds, max_connections=args.max_connections,
                  warm_connections=args.warm_connections)
    figures = {"sent": outcome.sent, "unanswered": outcome.unanswered, "connections": outcome.connections,
               "waited_for_connection": outcome.waited_for_connection,
               "max_schedule_lag_ms": outcome.max_schedule_lag_ms,
               "statuses": {str(status): len(values) for status, values in outcome.latencies_ms.items()}}
    for status, name in ((202, "accepted"), (503, "refused")):
        values = outcome.latencies_ms.get(status, [])
        figures[name] = {f"p{round(q * 100)}_ms": percentile(values, q) for q in (0.5, 0.95, 0.99)}
        figures[name]["max_ms"] = max(values, default=None)
    print("OPENLOOP_JSON " + json.dumps(figures))


if __name__ == "__main__":
    main()
