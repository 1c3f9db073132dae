"""What one API process takes on at once, so overload is refused quickly instead of piling up:
a bound on requests in flight, on the request body, and on the wait for a PostgreSQL connection.
Each refusal is an answer in the one error shape (``errors``), never a hang or a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import asyncpg
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskplatform.errors import assign_request_id, error_response

log = logging.getLogger("taskplatform.api")

RETRY_AFTER = {"Retry-After": "1"}

# Cheap and needed most under load (a probe failing would take the API out of rotation, and a
# scraper should see the overload): never refused for concurrency.
UNLIMITED_PATHS = frozenset({"/health", "/health/ready", "/metrics"})


class Overloaded(Exception):
    """This process has no capacity left for the request (a busy pool); 503 ``overloaded``."""


def overloaded_response(request_id: str, what: str):
    return error_response(request_id, 503, "overloaded", f"the API is overloaded ({what}); retry after Retry-After",
                          RETRY_AFTER)


class ConcurrencyLimit:
    """Raw ASGI middleware around the whole app: how many requests of this process are being
    served at once. One more is refused at once with 503 ``overloaded`` (no queue: a queue is
    a pile-up). The event loop is single-threaded, so plain counters are exact.

    Two bounds. Up to ``max_in_flight`` absorbs a burst: requests that arrive together wait a
    little for the CPU and the pool, and the wait ends with the burst. Once a request had to be
    refused, more arrive than the process serves, and every one admitted beyond its PostgreSQL
    pool (``overloaded_in_flight``) would only wait behind the others, for a connection and for
    the CPU, for as long as the overload lasts. So from then on it admits that many at once for
    ``OVERLOADED_SECONDS``, then tries ``max_in_flight`` again. The refusals meanwhile do not
    prolong it: clients that send again as soon as they are refused (a closed loop, like wrk)
    would otherwise keep a process at the lower bound for good, even when they are few enough
    to be served at the full one.

    Under overload most requests are refused, so a refusal must cost next to nothing, or
    refusing alone would eat the CPU the accepted requests need: a pre-encoded answer, no
    access log line (a warning a second with the count instead), one counter."""

    # Under a lasting overload each try of the full bound admits a burst of slow requests, and
    # the refusals wait behind them for the ~0.2 s the burst takes to drain (at 4x on 2 CPUs):
    # once every 30 s keeps that out of the refusals' 99th percentile. It is also how long
    # clients that resend at once can keep a process at the lower bound.
    OVERLOADED_SECONDS = 30.0

    def __init__(self, app, max_in_flight: int, overloaded_in_flight: int,
                 on_refused: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic):
        self.app, self.max_in_flight, self.in_flight = app, max_in_flight, 0
        self.overloaded_in_flight = min(overloaded_in_flight, max_in_flight)
        self.limit = max_in_flight
        self.on_refused, self.clock = on_refused, clock
        self._lowered_at = 0.0
        self._refused_since_log, self._logged_at = 0, 0.0
        self._message = json.dumps("the API is overloaded (more requests than this process serves at once); "
                                   "retry after Retry-After").encode()

    def full(self) -> bool:
        if self.limit < self.max_in_flight and self.clock() - self._lowered_at >= self.OVERLOADED_SECONDS:
            self.limit = self.max_in_flight
        return self.in_flight >= self.limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:  # lifespan messages too
            return await self.app(scope, receive, send)
        if self.full():
            return await self._refuse(scope, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, scope, send) -> None:
        request_id = assign_request_id(scope)
        body = (b'{"code":"overloaded","message":' + self._message + b',"request_id":'
                + json.dumps(request_id).encode() + b"}")
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1"), (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})
        now = self.clock()
        if self.limit == self.max_in_flight:
            self.limit, self._lowered_at = self.overloaded_in_flight, now
        self.on_refused()
        self._refused_since_log += 1
        if now - self._logged_at >= 1.0:
            log.warning("overloaded: refusing requests", extra={
                "refused": self._refused_since_log, "in_flight": self.in_flight, "limit": self.limit})
            self._refused_since_log, self._logged_at = 0, now


class BodyTooLarge(StarletteHTTPException):
    """A Starlette HTTPException so that FastAPI's body reader passes it on as is (it turns any
    other exception raised while reading into a 400)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """Raw ASGI middleware: a body over ``max_bytes`` is refused with 413 — from Content-Length
    before anything is read, and for a body without one (chunked) as soon as what has arrived
    passes the limit, so an unbounded body is never held in memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        started = False

        async def watching_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:  # read outside FastAPI's body reader (whose handler answers it)
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(scope.get("request_id", ""), 413, "payload_too_large",
                                  f"request body larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


class BoundedPool:
    """The asyncpg pool's query methods, each waiting at most ``acquire_timeout`` seconds for a
    connection: when PostgreSQL is slow, requests give up with ``Overloaded`` instead of queueing
    for the pool without end (asyncpg's own pool methods wait for ever). ``None``: as long as it
    takes (the worker's loops). It counts the queries waiting for a connection, which asyncpg
    does not say (``state``, the db_pool_* metrics)."""

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float | None):
        self.pool, self.acquire_timeout = pool, acquire_timeout
        self.waiting = 0

    def state(self) -> tuple[int, int, int, int]:
        """(connections in use, idle, queries waiting for one, the most the pool opens)."""
        idle = self.pool.get_idle_size()
        return self.pool.get_size() - idle, idle, self.waiting, self.pool.get_max_size()

    async def _acquire(self) -> asyncpg.Connection:
        self.waiting += 1
        try:
            return await self.pool.acquire(timeout=self.acquire_timeout)
        except asyncio.TimeoutError:
            raise Overloaded(f"no database connection free within {self.acquire_timeout} s") from None
        finally:
            self.waiting -= 1

    async def _run(self, method: str, query: str, args) -> object:
        conn = await self._acquire()
        try:
            return await getattr(conn, method)(query, *args)
        finally:
            await self.pool.release(conn)

    @contextlib.asynccontextmanager
    async def acquire(self):
        """A connection of its own for a transaction, waiting for it as the query methods do."""
        conn = await self._acquire()
        try:
            yield conn
        finally:
            await self.pool.release(conn)

    async def fetch(self, query: str, *args):
        return await self._run("fetch", query, args)

    async def fetchrow(self, query: str, *args):
        return await self._run("fetchrow", query, args)

    async def fetchval(self, query: str, *args):
        return await self._run("fetchval", query, args)

    async def execute(self, query: str, *args):
        return await self._run("execute", query, args)

    async def close(self) -> None:
        await self.pool.close()
