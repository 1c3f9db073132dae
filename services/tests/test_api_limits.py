"""Overload and oversized requests are refused cleanly: 503 ``overloaded`` with Retry-After when
a process has too much in flight or no database connection comes free, 413 for a body over the
limit (before it is read), 422 for a page over the limit; an unresponsive Redis does not hold up
a create. Against real API processes, PostgreSQL and Redis."""

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

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

