"""What the platform promises under faults: a worker `kill -9` mid-task and a Redis restart
that loses every message lose no accepted task, and complete none twice."""

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
