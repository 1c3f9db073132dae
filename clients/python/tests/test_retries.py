"""Resends against the real API behind a proxy that fails on purpose (``faulty_proxy``): what
is resent, how often, after how long, and that a resent create makes one task."""

from __future__ import annotations

import time
import uuid

import pytest

from faulty_proxy import Answer, DropAfter, DropBefore
from shipyard_tasks import (AsyncClient, Client, RateLimited, RetryPolicy, TransportError, Unavailable,
                            UnexpectedAnswer)
from taskplatform_testing.servers import free_port
from conftest import FAST

GATEWAY_DOWN = Answer(503)  # a load balancer's page, not the API's error shape
RATE_LIMITED = {"code": "rate_limited", "message": "too many requests", "request_id": "r"}


@pytest.fixture
def via_proxy(proxy, token):
    with Client(proxy.url, token, retry=FAST) as opened:
        yield opened


def test_a_read_is_resent_after_a_gateway_503_and_a_dropped_connection(via_proxy, proxy, client):
    task = client.create_task("checksum", delay_seconds=600)
    proxy.inject(GATEWAY_DOWN, DropBefore())
    assert via_proxy.get_task(task.id).id == task.id
    sends = proxy.sends("GET", "/v1/tasks/")
    assert [s.forwarded for s in sends] == [False, False, True]
    # One request id over the sends of a call: the API's logs group them.
    assert len({s.headers["X-Request-Id"] for s in sends}) == 1


def test_a_create_whose_answer_was_lost_is_resent_with_its_key_and_makes_one_task(via_proxy, proxy, client):
    proxy.inject(DropAfter())  # the API creates the task, its answer never arrives
    task = via_proxy.create_task("checksum", {"once": True})
    sends = proxy.sends("POST", "/v1/tasks")
    assert [s.forwarded for s in sends] == [True, True]
    assert sends[0].headers["Idempotency-Key"] == sends[1].headers["Idempotency-Key"]
    assert [t.id for t in client.iter_tasks()] == [task.id]


def test_a_post_without_a_key_is_not_resent_when_it_may_have_been_acted_on(via_proxy, proxy, client):
    task = client.create_task("checksum", delay_seconds=600)
    proxy.inject(DropAfter())
    with pytest.raises(TransportError) as lost:
        via_proxy.cancel_task(task.id)
    assert lost.value.attempts == 1 and len(proxy.sends("POST", "/v1/tasks/")) == 1
    assert client.get_task(task.id).status == "cancelled"  # it was: resending would have got a 409
    proxy.inject(GATEWAY_DOWN)
    with pytest.raises(Unavailable) as down:
        via_proxy.retry_task(task.id)
    assert down.value.status == 503 and down.value.code == "http_503" and "bad gateway" in down.value.message
    assert len(proxy.sends("POST", f"/v1/tasks/{task.id}/retry")) == 1


def test_a_429_is_resent_after_its_retry_after(via_proxy, proxy):
    proxy.inject(Answer(429, RATE_LIMITED, {"Retry-After": "1"}))
    started = time.monotonic()
    assert via_proxy.list_tasks().items == []
    assert time.monotonic() - started >= 1.0
    assert len(proxy.sends("GET", "/v1/tasks")) == 2


def test_a_retry_after_beyond_the_policys_bound_is_raised_at_once(via_proxy, proxy):
    proxy.inject(Answer(429, RATE_LIMITED, {"Retry-After": "30"}))
    with pytest.raises(RateLimited) as refused:
        via_proxy.list_tasks()
    assert refused.value.retry_after == 30 and refused.value.message == "too many requests"
    assert len(proxy.sends("GET", "/v1/tasks")) == 1


def test_resends_stop_after_the_policys_attempts(proxy, token):
    proxy.inject(*[GATEWAY_DOWN] * 5)
    with Client(proxy.url, token, retry=RetryPolicy(attempts=3, base_seconds=0.01)) as impatient:
        with pytest.raises(Unavailable):
            impatient.list_tasks()
    assert len(proxy.sends("GET", "/v1/tasks")) == 3


def test_a_success_that_is_not_the_apis_answer_is_named_as_such(via_proxy, proxy):
    proxy.inject(Answer(200))  # a captive portal's page
    with pytest.raises(UnexpectedAnswer) as odd:
        via_proxy.list_tasks()
    assert odd.value.status == 200 and "bad gateway" in odd.value.body


def test_no_server_at_all_is_a_transport_error_after_every_attempt(token):
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, token, retry=RetryPolicy(attempts=2, base_seconds=0.01)) as nowhere:
        with pytest.raises(TransportError) as unreachable:
            nowhere.cancel_task(str(uuid.uuid4()))  # never sent: safe to resend even a POST
    assert unreachable.value.attempts == 2 and "ConnectError" in str(unreachable.value)


@pytest.mark.anyio
async def test_the_async_client_resends_the_same_way(proxy, token, client):
    proxy.inject(DropAfter(), GATEWAY_DOWN)
    async with AsyncClient(proxy.url, token, retry=FAST) as via:
        task = await via.create_task("checksum", {"async": True})
    assert [s.forwarded for s in proxy.sends("POST", "/v1/tasks")] == [True, False, True]
    assert [t.id for t in client.iter_tasks()] == [task.id]
