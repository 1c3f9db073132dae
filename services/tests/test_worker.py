"""Workers against the real stack: processing, retries with backoff, dead tasks and re-drive,
duplicate delivery, live concurrency, graceful SIGTERM."""

import os
import signal
import time
import uuid

import pytest
import redis

from taskplatform import queue
from taskplatform.kinds import canonical_json


@pytest.fixture(scope="module")
def workers(platform, api_url):
    procs = [platform.start_worker(), platform.start_worker()]
    yield procs
    platform.stop_workers()


def test_checksum_task_is_processed(workers, tenant):
    import hashlib
    payload = {"b": [1, 2], "a": "x"}
    task = tenant.wait_for(tenant.create("checksum", payload).json()["id"])
    assert task["status"] == "succeeded" and task["attempts"] == 1
    assert task["result"] == {"sha256": hashlib.sha256(canonical_json(payload)).hexdigest()}


def test_failing_task_retries_with_backoff_then_succeeds(workers, tenant):
    task_id = tenant.create("fail", {"times": 2}).json()["id"]
    seen = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = tenant.get(task_id).json()
        seen.add(task["status"])
        if task["status"] == "succeeded":
            break
        time.sleep(0.02)
    assert task["status"] == "succeeded" and task["attempts"] == 3
    assert "retry_wait" in seen


def test_always_failing_task_ends_dead_is_kept_and_can_be_redriven(workers, tenant):
    task_id = tenant.create("fail", {"always": True}).json()["id"]
    dead = tenant.wait_for(task_id)
    assert dead["status"] == "dead" and dead["attempts"] == 3 and "failing on purpose" in dead["error"]
    listed = tenant.session.get(f"{tenant.base}/v1/tasks", params={"status": "dead"}).json()["items"]
    assert [t["id"] for t in listed] == [task_id]
    redriven = tenant.session.post(f"{tenant.base}/v1/tasks/{task_id}/retry")
    assert redriven.status_code == 202 and redriven.json()["status"] == "queued" and redriven.json()["attempts"] == 0
    again = tenant.wait_for(task_id)
    assert again["status"] == "dead" and again["attempts"] == 3 and again["updated_at"] > dead["updated_at"]


def test_duplicate_delivery_completes_once(workers, tenant, platform):
    task_id = tenant.create("sleep", {"seconds": 0.5}).json()["id"]
    client = redis.Redis(port=platform.redis.port, password=platform.redis.password)
    for _ in range(3):
        client.xadd(queue.STREAM, {"task_id": task_id})
    task = tenant.wait_for(task_id)
    time.sleep(1)  # let the duplicates be delivered and dropped
    task = tenant.get(task_id).json()
    assert task["status"] == "succeeded" and task["attempts"] == 1


def test_an_attempt_past_its_kinds_timeout_is_cancelled_and_counted(workers, tenant, runtime_config):
    runtime_config(task_timeout_seconds_by_kind={"sleep": 0.5})
    hung = tenant.create("sleep", {"seconds": 20}).json()["id"]
    quick = tenant.create("sleep", {"seconds": 0.1}).json()["id"]
    task = tenant.wait_for(hung, timeout=20)
    assert task["status"] == "dead" and task["attempts"] == 3, task
    assert task["error"].startswith("TimeoutError: attempt 3 ran longer than 0.5 s"), task
    assert tenant.wait_for(quick)["status"] == "succeeded"


def test_concurrency_follows_the_live_config(workers, tenant, runtime_config):
    runtime_config(worker_concurrency=1)
    ids = [tenant.create("sleep", {"seconds": 0.4}).json()["id"] for _ in range(4)]
    time.sleep(0.3)
    running = [tenant.get(i).json()["status"] for i in ids].count("running")
    assert running <= 2  # two workers, one slot each
    for task_id in ids:
        assert tenant.wait_for(task_id)["status"] == "succeeded"


def test_sigterm_finishes_the_in_flight_task_then_exits(platform, tenant, workers):
    for proc in workers:  # only the new worker below may take the task
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    worker = platform.start_worker()
    time.sleep(1.0)
    task_id = tenant.create("sleep", {"seconds": 1.5}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=10)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0
    assert tenant.get(task_id).json()["status"] == "succeeded"
