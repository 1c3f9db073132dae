"""What the platform promises under faults: a worker `kill -9` mid-task and a Redis restart
that loses every message lose no accepted task, and complete none twice; while PostgreSQL is
away (a restart, a promotion) the API says so with a retryable 503."""

import os
import signal
import time

import pytest


@pytest.fixture
def clean_workers(platform, api_url):
    yield
    platform.stop_workers()


def test_kill_9_mid_task_is_reclaimed_and_completed_once(platform, tenant, clean_workers):
    victim = platform.start_worker()
    time.sleep(1.0)
    task_id = tenant.create("sleep", {"seconds": 2}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=10)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    platform.start_worker()
    task = tenant.wait_for(task_id, timeout=30)
    assert task["status"] == "succeeded" and task["result"] == {"slept": 2.0}
    assert task["attempts"] == 2  # the killed attempt, then the one that completed


def test_no_accepted_task_is_lost_across_a_redis_restart(platform, tenant, clean_workers):
    platform.redis.stop()
    accepted = []
    for i in range(10):
        response = tenant.create("checksum", {"during_outage": i})
        assert response.status_code == 202, response.text  # committed in PostgreSQL before the enqueue
        accepted.append(response.json()["id"])
    platform.redis.start()  # same port, empty: the stream and its group are gone
    platform.start_worker()
    for task_id in accepted:
        task = tenant.wait_for(task_id, timeout=30)
        assert task["status"] == "succeeded" and task["attempts"] == 1


def test_postgres_away_is_a_retryable_503_and_the_api_recovers_on_its_own(platform, tenant):
    platform.pg.stop()
    try:
        response = tenant.create("checksum", {"during": "outage"})
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "database_unavailable"
        assert response.headers["Retry-After"] == "1"
    finally:
        platform.pg.restart()
    deadline = time.monotonic() + 15
    while (response := tenant.create("checksum", {"after": "outage"})).status_code != 202:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
