"""Recovery from PostgreSQL, the truth: a task committed but never enqueued (the API's XADD
failed, a Redis failover lost the message) runs even while a backlog fills the stream, and a
worker that went away leaves the consumer group."""

import os
import signal
import socket
import time
import uuid

import psycopg
import pytest
import redis

from conftest import wait_worker_ready
from taskplatform import queue


@pytest.fixture
def clean_workers(platform, api_url):
    yield
    platform.stop_workers()


def insert_without_enqueue(platform, tenant_name: str) -> str:
    """A task as the API leaves it when its XADD fails: committed, with no message anywhere."""
    task_id = str(uuid.uuid4())
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password) as conn:
        conn.execute("INSERT INTO tasks (id, tenant, kind, payload, max_attempts) VALUES (%s, %s, 'checksum', "
                     "'{}', 3)", (task_id, tenant_name))
    return task_id


def test_a_task_whose_enqueue_failed_is_recovered_while_a_backlog_waits(platform, tenant, clean_workers,
                                                                        runtime_config):
    wait_worker_ready(platform.start_worker())
    runtime_config(worker_concurrency=1)  # one slot: 40 tasks of 0.25 s keep the stream busy ~10 s
    lost = insert_without_enqueue(platform, tenant.name)
    backlog = [tenant.create("sleep", {"seconds": 0.25}).json()["id"] for _ in range(40)]
    try:
        task = tenant.wait_for(lost, timeout=30)
        still_queued = [t for t in backlog if tenant.get(t).json()["status"] == "queued"]
        assert task["status"] == "succeeded" and task["attempts"] == 1, task
        # Recovered after reconcile_after_seconds (2 s), not once the backlog drained.
        assert len(still_queued) >= 10, f"recovered only after the backlog: {len(still_queued)} still queued"
    finally:  # what is left would hold the slots of the next tests' workers
        for task_id in backlog:
            tenant.session.post(f"{tenant.base}/v1/tasks/{task_id}/cancel", timeout=10)


def consumers(platform) -> set[str]:
    client = redis.Redis(port=platform.redis.port, password=platform.redis.password)
    try:
        return {c["name"].decode() for c in client.xinfo_consumers(queue.STREAM, queue.GROUP)}
    finally:
        client.close()


def consumer_name(worker) -> str:
    return f"{socket.gethostname()}-{worker.pid}"  # how a worker names itself in the group


def test_a_killed_workers_consumer_leaves_the_group_once_its_entries_are_reclaimed(platform, tenant,
                                                                                    clean_workers):
    victim = platform.start_worker()
    wait_worker_ready(victim)
    task_id = tenant.create("sleep", {"seconds": 1}).json()["id"]
    tenant.wait_for(task_id, statuses=("running",), timeout=10)
    os.killpg(victim.pid, signal.SIGKILL)  # its message stays pending under its consumer
    victim.wait(10)
    survivor = platform.start_worker(TASKS_CONSUMER_FORGET_IDLE_SECONDS=3)
    wait_worker_ready(survivor)
    task = tenant.wait_for(task_id, timeout=30)
    assert task["status"] == "succeeded" and task["attempts"] == 2, task
    deadline = time.monotonic() + 20
    while consumer_name(victim) in consumers(platform):
        assert time.monotonic() < deadline, f"{consumer_name(victim)} still in the group: {consumers(platform)}"
        time.sleep(0.1)
    assert consumer_name(survivor) in consumers(platform)
