"""When the client sends a request again and how long it waits, without a server (the same
rules against the real API behind a faulty proxy: ``test_retries.py``)."""

from __future__ import annotations

import random

import httpx
import pytest

from shipyard_tasks.retries import RetryPolicy, may_resend_after_answer, may_resend_after_error
from shipyard_tasks.waiting import PollSchedule

REQUEST = httpx.Request("POST", "http://127.0.0.1:1/v1/tasks")


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (6, 5.0), (20, 5.0)])
def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half(attempt, ceiling):
    policy, rng = RetryPolicy(base_seconds=0.2, max_backoff_seconds=5.0), random.Random(7)
    waits = [policy.backoff(attempt, rng) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    assert max(waits) - min(waits) > ceiling / 4  # jittered: clients refused together spread out


def test_no_wait_once_the_attempts_are_used_up():
    policy = RetryPolicy(attempts=3)
    assert policy.delay(2, None) is not None
    assert policy.delay(3, None) is None


def test_retry_after_is_honoured_up_to_the_policys_bound():
    policy = RetryPolicy(max_retry_after_seconds=10)
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(1, 30.0) is None  # longer than allowed: raise, let the caller decide


def test_a_policy_without_a_first_send_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


@pytest.mark.parametrize("error, method, idempotent, resend", [
    (httpx.ConnectError("refused", request=REQUEST), "POST", False, True),  # never left: any request
    (httpx.ConnectTimeout("slow", request=REQUEST), "POST", False, True),
    (httpx.RemoteProtocolError("dropped", request=REQUEST), "POST", False, False),  # may have been acted on
    (httpx.RemoteProtocolError("dropped", request=REQUEST), "POST", True, True),  # the key makes it safe
    (httpx.ReadTimeout("slow", request=REQUEST), "GET", False, True),
    (httpx.ReadError("reset", request=REQUEST), "DELETE", False, True),
])
def test_resend_after_no_answer(error, method, idempotent, resend):
    assert may_resend_after_error(method, idempotent, error) is resend


@pytest.mark.parametrize("status, code, method, idempotent, resend", [
    (429, "rate_limited", "POST", False, True),  # refused before the request is looked at
    (503, "overloaded", "POST", False, True),
    (503, "maintenance", "POST", False, True),
    (503, "database_unavailable", "POST", False, False),  # may have been half done
    (503, "database_unavailable", "GET", False, True),
    (502, "http_502", "POST", True, True),
    (504, "http_504", "POST", False, False),
    (500, "internal_error", "GET", False, False),  # a fault, not a passing state: resending hides it
    (409, "conflict", "GET", False, False),
    (404, "not_found", "GET", False, False),
])
def test_resend_after_an_answer(status, code, method, idempotent, resend):
    assert may_resend_after_answer(method, idempotent, status, code) is resend


def test_a_wait_polls_more_and_more_rarely_and_never_past_its_deadline():
    schedule = PollSchedule(timeout=0.5, first=0.05, ceiling=0.2)
    delays = [schedule.next_delay() for _ in range(3)]
    assert delays[0] <= 0.05 and 0.05 < delays[1] <= 0.1 and 0.1 < delays[2] <= 0.2
    schedule.deadline -= 1  # as if its time had passed
    assert schedule.next_delay() is None
