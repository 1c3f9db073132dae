"""Overload and oversized requests are refused cleanly: 503 ``overloaded`` with Retry-After when
a process has too much in flight or no database connection comes free, 413 for a body over the
limit (before it is read), 422 for a page over the limit; an unresponsive Redis does not hold up
a create. Against real API processes, PostgreSQL and Redis; the concurrency limit's own rules
also in process, around an app whose requests end when the test says."""

import asyncio
import gc
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from taskplatform import cli
from taskplatform.limits import ConcurrencyLimit
from test_api import assert_error

MAX_BODY_BYTES = 65_536  # TASKS_API_MAX_BODY_BYTES's default, which the session's API runs with
MAX_PAGE_SIZE = 100  # TASKS_API_MAX_PAGE_SIZE's default


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    """Opens a connection and sends ``head`` (request line and headers) and ``body`` as given:
    a request whose body is not (yet) all there, which ``requests`` cannot send."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def read_status(sock: socket.socket) -> tuple[int, bytes]:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1]), received


def post_head(tenant, length: int) -> str:
    return (f"POST /v1/tasks HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Authorization: {tenant.session.headers['Authorization']}\r\nContent-Length: {length}\r\n")


def test_a_body_over_the_limit_is_413_in_the_error_shape(tenant):
    big = {"blob": "x" * MAX_BODY_BYTES}
    assert_error(tenant.create("checksum", big), 413, "payload_too_large")
    chunked = tenant.session.post(f"{tenant.base}/v1/tasks", timeout=10, headers={"Content-Type": "application/json"},
                                  data=(part for part in [b'{"kind": "checksum", "payload": {"blob": "',
                                                          b"x" * MAX_BODY_BYTES, b'"}}']))
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert_error(chunked, 413, "payload_too_large")
    assert tenant.create("checksum", {"blob": "x" * (MAX_BODY_BYTES - 100)}).status_code == 202


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(tenant):
    """Only the headers go out: the answer comes without the API waiting for (or holding) a
    gigabyte it would refuse anyway."""
    sock = raw_request(tenant.base, post_head(tenant, 10**9))
    try:
        status, response = read_status(sock)
    finally:
        sock.close()
    assert status == 413, response


def test_a_page_over_the_limit_is_422(tenant):
    assert tenant.session.get(f"{tenant.base}/v1/tasks", params={"limit": MAX_PAGE_SIZE}).status_code == 200
    assert_error(tenant.session.get(f"{tenant.base}/v1/tasks", params={"limit": MAX_PAGE_SIZE + 1}), 422,
                 "invalid_request")


def test_requests_beyond_the_concurrency_limit_get_503_at_once(start_api, platform, tenant):
    url = start_api(TASKS_API_MAX_CONCURRENT_REQUESTS=1).url
    tenant.base = url
    body = b'{"kind": "checksum", "payload": {"held": true}}'
    # A create whose body has not all arrived holds the one slot for as long as we like.
    held = raw_request(url, post_head(tenant, len(body)), body[:10])
    try:
        deadline = time.monotonic() + 20
        while (refused := tenant.session.get(f"{url}/v1/tasks", timeout=10)).status_code != 503:
            assert refused.status_code == 200, refused.text
            assert time.monotonic() < deadline, "the held request never took the slot"
            time.sleep(0.05)
        assert_error(refused, 503, "overloaded")
        assert refused.headers["Retry-After"] == "1"
        ready = requests.get(f"{url}/health/ready", timeout=10)  # probes are never refused for load
        assert ready.status_code == 200, ready.text
        held.sendall(body[10:])
        status, response = read_status(held)
        assert status == 202, response
    finally:
        held.close()
    assert tenant.session.get(f"{url}/v1/tasks", timeout=10).status_code == 200  # the slot is free again


def test_a_request_that_gets_no_database_connection_in_time_gets_503(start_api, platform, tenant):
    url = start_api(TASKS_PG_POOL_SIZE=1, TASKS_PG_ACQUIRE_TIMEOUT_SECONDS=0.2).url
    tenant.base = url
    dsn = dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
               password=platform.pg.password)
    with psycopg.connect(**dsn) as locker, psycopg.connect(**dsn, autocommit=True) as observer, \
            ThreadPoolExecutor(1) as pool:
        # A slow database: the pool's one connection waits on a lock we hold.
        locker.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        stuck = pool.submit(tenant.session.get, f"{url}/v1/tasks", timeout=30)
        deadline = time.monotonic() + 20
        while not observer.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE '%FROM tasks%'").fetchone()[0]:
            assert time.monotonic() < deadline, "the first request never reached the lock"
            time.sleep(0.05)
        refused = tenant.session.get(f"{url}/v1/tasks", timeout=30)
        locker.rollback()
        assert_error(refused, 503, "overloaded")
        assert refused.headers["Retry-After"] == "1"
        assert stuck.result().status_code == 200


@pytest.fixture
def unresponsive_redis():
    """A port that accepts connections (the kernel's backlog) and never answers: a Redis that
    hangs, or one behind a network that drops packets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_a_create_is_accepted_while_redis_does_not_answer(start_api, tenant, unresponsive_redis):
    """PostgreSQL is the truth: the task is committed and the reconciler enqueues it later. Each
    Redis call of the request is given up after TASKS_API_REDIS_TIMEOUT_SECONDS (0.2 s here);
    without that bound the request would hang on Redis's socket timeout (5 s, retried)."""
    tenant.base = start_api(TASKS_REDIS_PORT=unresponsive_redis, TASKS_API_REDIS_TIMEOUT_SECONDS=0.2).url
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "payload": {}}, timeout=4)
    assert response.status_code == 202, response.text
    assert tenant.get(response.json()["id"]).json()["status"] == "queued"



class HeldApp:
    """An ASGI app whose every request waits until the test releases it by path."""

    def __init__(self):
        self.entered: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send):
        self.entered.setdefault(scope["path"], asyncio.Event()).set()
        await self.release.setdefault(scope["path"], asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def request(limit: ConcurrencyLimit, path: str, headers=()) -> tuple[int, dict, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    # Bounded: an admitted request that should have been refused waits for a release that never comes.
    await asyncio.wait_for(limit({"type": "http", "path": path, "headers": list(headers)}, None, send), 10)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


async def hold(limit: ConcurrencyLimit, app: HeldApp, path: str) -> asyncio.Task:
    """A request that is in flight until ``app.release[path]`` is set."""
    task = asyncio.create_task(request(limit, path))
    entered = asyncio.create_task(app.entered.setdefault(path, asyncio.Event()).wait())
    await asyncio.wait([task, entered], return_when=asyncio.FIRST_COMPLETED)
    entered.cancel()
    assert not task.done(), f"{path} was not admitted: {task.result()[0]}"
    return task


def test_a_refusal_is_the_error_shape_with_retry_after_and_the_callers_request_id():
    async def scenario():
        app = HeldApp()
        refusals = []
        limit = ConcurrencyLimit(app, 1, 1, on_refused=lambda: refusals.append(1))
        held = await hold(limit, app, "/held")
        status, headers, body = await request(limit, "/v1/tasks", [(b"x-request-id", b"trace-42")])
        app.release["/held"].set()
        assert (await held)[0] == 200
        return status, headers, body, refusals

    status, headers, body, refusals = asyncio.run(scenario())
    assert status == 503 and refusals == [1]
    assert headers[b"retry-after"] == b"1" and headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"] == b"trace-42" and int(headers[b"content-length"]) == len(body)
    doc = json.loads(body)
    assert set(doc) == {"code", "message", "request_id"}
    assert doc["code"] == "overloaded" and doc["request_id"] == "trace-42"


def test_once_it_refused_a_process_admits_only_its_pool_size_for_a_while_then_tries_the_full_limit():
    async def scenario():
        app, clock = HeldApp(), Clock()
        limit = ConcurrencyLimit(app, max_in_flight=4, overloaded_in_flight=2, clock=clock)
        burst = [await hold(limit, app, f"/burst/{i}") for i in range(4)]  # a burst up to the full limit
        assert (await request(limit, "/one-more"))[0] == 503
        for i in range(3):
            app.release[f"/burst/{i}"].set()
        await asyncio.gather(*burst[:3])
        assert limit.in_flight == 1
        second = await hold(limit, app, "/second")
        # Two in flight, the pool's size, though the full limit is four: still overloaded.
        assert (await request(limit, "/third"))[0] == 503
        clock.now += ConcurrencyLimit.OVERLOADED_SECONDS - 0.01
        assert (await request(limit, "/third"))[0] == 503
        clock.now += 0.01  # the refusals meanwhile did not prolong the lower bound
        again = [await hold(limit, app, f"/again/{i}") for i in range(2)]  # the full limit again
        assert limit.in_flight == 4 and (await request(limit, "/fifth"))[0] == 503
        for path in ["/burst/3", "/second", "/again/0", "/again/1"]:
            app.release[path].set()
        return [status for status, _, _ in await asyncio.gather(burst[3], second, *again)]

    assert asyncio.run(scenario()) == [200, 200, 200, 200]


def test_probes_and_metrics_are_never_refused():
    async def scenario():
        app = HeldApp()
        limit = ConcurrencyLimit(app, 1, 1)
        held = await hold(limit, app, "/held")
        answered = []
        for path in ("/health", "/health/ready", "/metrics"):
            app.release[path] = asyncio.Event()
            app.release[path].set()
            answered.append((await request(limit, path))[0])
        app.release["/held"].set()
        await held
        return answered

    assert asyncio.run(scenario()) == [200, 200, 200]


def test_an_api_process_puts_what_it_built_at_start_out_of_the_gcs_sight(platform, monkeypatch):
    """A full collection walks every object the GC tracks, the event loop stopped meanwhile: for
    the app's own (~80k) that was 30-75 ms every 2-3 s under load, for objects that live as long
    as the process anyway."""
    for name, value in platform.env().items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # logs.setup() takes over the root logger
    frozen_before = gc.get_freeze_count()
    try:
        cli.app_factory()
        assert gc.get_freeze_count() - frozen_before > 10_000
    finally:
        gc.unfreeze()
        root.handlers[:] = handlers
        root.setLevel(level)
