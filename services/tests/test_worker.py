"""Workers against the real stack: processing, retries with backoff, dead tasks and re-drive,
duplicate delivery, live concurrency, graceful SIGTERM."""

import os
import signal
import time

import pytest
import redis

from conftest import wait_worker_ready
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
    tenant.wait_for(task_id)
    deadline = time.monotonic() + 10
    while not stream_drained(client):  # every duplicate delivered and dropped
        assert time.monotonic() < deadline, client.xinfo_groups(queue.STREAM)
        time.sleep(0.05)
    task = tenant.get(task_id).json()
    assert task["status"] == "succeeded" and task["attempts"] == 1


def stream_drained(client) -> bool:
    newest = client.xrevrange(queue.STREAM, count=1)
    group = next(g for g in client.xinfo_groups(queue.STREAM) if g["name"] == queue.GROUP.encode())
    return group["pending"] == 0 and (not newest or newest[0][0] == group["last-delivered-id"])


def test_an_attempt_past_its_kinds_timeout_is_cancelled_and_counted(workers, tenant, runtime_config):
    runtime_config(task_timeout_seconds_by_kind={"sleep": 0.5})
    hung = tenant.create("sleep", {"seconds": 20}).json()["id"]
    quick = tenant.create("sleep", {"seconds": 0.1}).json()["id"]
    task = tenant.wait_for(hung, timeout=20)
    assert task["status"] == "dead" and task["attempts"] == 3, task
    assert task["error"].startswith("TimeoutError: attempt 3 ran longer than 0.5 s"), task
    assert tenant.wait_for(quick)["status"] == "succeeded"


def test_concurrency_follows_the_live_config(workers, tenant, runtime_config):
    runtime_config(worker_concurrency=1)  # returns once the API and both workers have applied it
    ids = set(tenant.create("sleep", {"seconds": 0.6}).json()["id"] for _ in range(4))
    most_running = 0
    deadline = time.monotonic() + 30
    while True:
        # One listing is one query: a consistent snapshot of the tenant's tasks.
        page = tenant.session.get(f"{tenant.base}/v1/tasks", params={"limit": 100}, timeout=10).json()["items"]
        statuses = [t["status"] for t in page if t["id"] in ids]
        most_running = max(most_running, statuses.count("running"))
        if statuses == ["succeeded"] * 4:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.02)
    assert 1 <= most_running <= 2  # two workers, one slot each (and the sampling did see them run)


def test_workers_delete_finished_tasks_past_the_retention_of_the_runtime_config(workers, tenant, platform,
                                                                                 runtime_config):
    import psycopg

    done = tenant.wait_for(tenant.create("checksum", {"keep": "briefly"}).json()["id"])
    kept = tenant.wait_for(tenant.create("checksum", {"keep": "a while"}).json()["id"])
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET updated_at = clock_timestamp() - interval '2 minutes' WHERE id = %s",
                     (done["id"],))  # it finished two minutes ago
    runtime_config(retention_seconds_by_tenant={tenant.name: 60})
    deadline = time.monotonic() + 10
    while tenant.get(done["id"]).status_code != 404:
        assert time.monotonic() < deadline, "the expired task is still there after 10 s"
        time.sleep(0.05)
    assert tenant.get(kept["id"]).json()["status"] == "succeeded"  # finished just now: kept


def test_sigterm_finishes_the_in_flight_task_then_exits(platform, tenant, workers):
    for proc in workers:  # only the new worker below may take the task
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    worker = platform.start_worker()
    wait_worker_ready(worker)
    task_id = tenant.create("sleep", {"seconds": 1.5}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=10)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0
    assert tenant.get(task_id).json()["status"] == "succeeded"

