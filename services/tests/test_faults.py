"""What the platform promises under faults: a worker `kill -9` mid-task and a Redis restart
that loses every message lose no accepted task, and complete none twice; a task outliving its
lease runs once; while PostgreSQL is away (a restart, a promotion) the API says so with a
retryable 503, and a worker carries on and ends its tasks once it is back."""

import os
import signal
import time

import pytest
import requests

from conftest import heartbeat, log_lines, wait_worker_ready


@pytest.fixture
def clean_workers(platform, api_url):
    yield
    platform.stop_workers()


def test_kill_9_mid_task_is_reclaimed_and_completed_once(platform, tenant, clean_workers):
    victim = platform.start_worker()
    wait_worker_ready(victim)
    task_id = tenant.create("sleep", {"seconds": 2}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=10)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    platform.start_worker()
    task = tenant.wait_for(task_id, timeout=30)
    assert task["status"] == "succeeded" and task["result"] == {"slept": 2.0}
    assert task["attempts"] == 2  # the killed attempt, then the one that completed


def test_a_task_that_kills_its_worker_every_time_ends_dead(platform, tenant, clean_workers):
    """A crash loop (OOM, segfault): each lost attempt counts, and the task ends after
    task_max_attempts (3 here) instead of being claimed for ever."""
    worker = platform.start_worker()
    wait_worker_ready(worker)
    task_id = tenant.create("sleep", {"seconds": 25}).json()["id"]
    for attempt in (1, 2, 3):
        tenant.wait_until(task_id, lambda t: t["status"] == "running" and t["attempts"] == attempt,
                          timeout=20, what=f"running attempt {attempt}")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        worker = platform.start_worker()
    task = tenant.wait_for(task_id, statuses=("dead",), timeout=20)
    assert task["attempts"] == 3 and "attempt 3 lost" in task["error"], task


def test_leases_are_kept_while_sigterm_waits_for_the_in_flight_task(platform, tenant, clean_workers):
    """The task outlives its lease (3 s here) after SIGTERM: another worker is ready to take it
    over if the lease expired, and must not; the finishing worker records it once."""
    finishing = platform.start_worker()
    wait_worker_ready(finishing)
    task_id = tenant.create("sleep", {"seconds": 6}).json()["id"]
    tenant.wait_until(task_id, lambda t: t["status"] == "running", timeout=10, what="running")
    wait_worker_ready(platform.start_worker())
    os.killpg(finishing.pid, signal.SIGTERM)
    assert finishing.wait(30) == 0
    task = tenant.get(task_id).json()
    assert task["status"] == "succeeded" and task["attempts"] == 1, task


def test_sigterm_past_the_grace_period_hands_the_task_back(platform, tenant, clean_workers):
    impatient = platform.start_worker(TASKS_SHUTDOWN_GRACE_SECONDS=0.5)
    wait_worker_ready(impatient)
    task_id = tenant.create("sleep", {"seconds": 3}).json()["id"]
    tenant.wait_until(task_id, lambda t: t["status"] == "running", timeout=10, what="running")
    os.killpg(impatient.pid, signal.SIGTERM)
    assert impatient.wait(30) == 0
    handed_back = tenant.get(task_id).json()
    assert handed_back["status"] == "queued" and handed_back["attempts"] == 0, handed_back  # did not count
    platform.start_worker()
    task = tenant.wait_for(task_id, timeout=30)
    assert task["status"] == "succeeded" and task["attempts"] == 1, task


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


def test_the_api_stays_ready_while_redis_is_down_and_says_so(platform, api_url, tenant):
    platform.redis.stop()
    try:
        for _ in range(4):  # every API process
            response = requests.get(f"{api_url}/health/ready", timeout=5)
            assert response.status_code == 200, response.text
            assert response.json()["redis"] == "unavailable"
        assert tenant.create("checksum", {"redis": "down"}).status_code == 202  # what readiness promises
    finally:
        platform.redis.start()
    deadline = time.monotonic() + 15
    while requests.get(f"{api_url}/health/ready", timeout=5).json().get("redis") != "ok":
        assert time.monotonic() < deadline, "redis not seen as back"
        time.sleep(0.1)


def test_postgres_away_is_a_retryable_503_and_the_api_recovers_on_its_own(platform, api_url, tenant):
    platform.pg.stop()
    try:
        ready = requests.get(f"{api_url}/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["code"] == "not_ready", ready.text
        assert "postgresql" in ready.json()["message"]
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


def test_a_task_that_outlives_its_lease_runs_once(platform, tenant, clean_workers):
    """Its lease (3 s here) is renewed while it runs: the other worker, ready to take over an
    expired lease, never gets it."""
    for _ in range(2):
        wait_worker_ready(platform.start_worker())
    task_id = tenant.create("sleep", {"seconds": 7}).json()["id"]
    task = tenant.wait_for(task_id, timeout=30)
    assert task["status"] == "succeeded" and task["attempts"] == 1, task


def test_a_worker_survives_a_postgres_outage_and_its_tasks_end_after_it(platform, tenant, clean_workers):
    worker = platform.start_worker()
    wait_worker_ready(worker)
    tasks = [tenant.create("sleep", {"seconds": 1}).json()["id"] for _ in range(6)]  # 4 slots: 2 wait
    tenant.wait_for(tasks[0], statuses=("running",), timeout=10)
    platform.pg.stop()
    try:
        outage_began = time.time()
        deadline = time.monotonic() + 20
        # Until a running task's outcome could not be recorded and the worker has beaten since.
        while not (interrupted(platform, tasks) and heartbeat(worker)["at"] > outage_began + 1):
            assert worker.poll() is None, f"worker exited with {worker.returncode} while PostgreSQL was away"
            assert time.monotonic() < deadline, (interrupted(platform, tasks), heartbeat(worker))
            time.sleep(0.1)
    finally:
        platform.pg.restart()
    for task_id in tasks:
        assert tenant.wait_for(task_id, timeout=30)["status"] == "succeeded"
    assert worker.poll() is None


def interrupted(platform, task_ids) -> list[str]:
    """The tasks a worker logged it could not finish recording (PostgreSQL away)."""
    return [line["task_id"] for line in log_lines(platform, "worker")
            if line["msg"] == "task processing interrupted" and line.get("task_id") in task_ids]
