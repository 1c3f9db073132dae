"""Blue-green releases, worker side, against the real stack: a task created through the preview
route goes on the stream of the API's colour and is run by a worker of that colour, never of
the other; a shared-stream task is run by either; a preview task no worker of its colour reads
is still recovered from PostgreSQL; a colour's workers drain on SIGTERM without taking new
tasks, and put back at once what they took but did not start.

The session's API is green (``Platform.env``); workers get their colour per test."""

import asyncio
import json
import os
import signal
import time
import uuid

import pytest
import redis

from conftest import live_workers, wait_worker_ready
from taskplatform import lanes, queue
from taskplatform.runtime_config import FileConfigSource
from taskplatform.secrets import FileSecretSource
from taskplatform.settings import ProcessSettings
from taskplatform.worker import Worker
from taskplatform_testing.servers import RUNTIME_DEFAULTS, Redis

GREEN_STREAM = queue.colour_stream("green")


@pytest.fixture
def workers(platform, api_url):
    """Starts workers of a colour for one test (none may be left from another test: they would
    read the green stream too); all stopped when it ends."""
    assert not live_workers(platform), "workers left running by an earlier test"

    def start(colour: str):
        worker = platform.start_worker(TASKS_RELEASE_COLOUR=colour)
        wait_worker_ready(worker)
        return worker

    yield start
    platform.stop_workers()


@pytest.fixture
def streams(platform):
    client = redis.Redis(port=platform.redis.port, password=platform.redis.password, decode_responses=True)
    yield client
    client.close()


def create(tenant, kind: str = "smoke", payload: dict | None = None, preview: bool = False) -> str:
    headers = {"X-Shipyard-Preview": "1"} if preview else {}
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": kind, "payload": payload or {}},
                                   headers=headers, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def message_ids(streams, stream: str, task_id: str) -> list[str]:
    """The ids of ``stream``'s entries that carry ``task_id``."""
    return [message_id for message_id, fields in streams.xrange(stream) if fields["task_id"] == task_id]


def delivered(streams, stream: str, message_id: str) -> bool:
    """Whether the workers' group has read ``message_id`` of ``stream`` (by any consumer)."""
    group = next((g for g in streams.xinfo_groups(stream) if g["name"] == queue.GROUP), None)
    as_numbers = lambda entry_id: tuple(int(part) for part in entry_id.split("-"))  # noqa: E731
    return group is not None and as_numbers(group["last-delivered-id"]) >= as_numbers(message_id)


def test_preview_tasks_go_to_the_apis_colour_and_are_run_by_its_workers(workers, tenant, streams,
                                                                          runtime_config):
    workers("blue")
    workers("green")
    # No recovery from PostgreSQL within the test: only a read of the green stream can run them.
    runtime_config(reconcile_after_seconds=120)
    preview = [create(tenant, preview=True) for _ in range(6)]
    shared = [create(tenant) for _ in range(6)]
    for task_id in preview:
        task = tenant.wait_for(task_id, timeout=20)
        assert task["status"] == "succeeded" and task["attempts"] == 1, task
        assert task["result"]["colour"] == "green" and task["result"]["version"] == "test-1", task
        assert len(message_ids(streams, GREEN_STREAM, task_id)) == 1
        assert message_ids(streams, queue.STREAM, task_id) == []
    for task_id in shared:
        task = tenant.wait_for(task_id, timeout=20)
        assert task["status"] == "succeeded" and task["result"]["colour"] in ("blue", "green"), task
        assert message_ids(streams, GREEN_STREAM, task_id) == []


def test_a_worker_of_the_other_colour_leaves_a_preview_task_to_a_worker_of_its_colour(workers, platform, tenant,
                                                                                       streams, runtime_config):
    blue = workers("blue")
    runtime_config(reconcile_after_seconds=120)
    waiting = create(tenant, preview=True)
    [message_id] = message_ids(streams, GREEN_STREAM, waiting)
    # The blue worker's reads after the preview task's enqueue: it took this one, so it read
    # past the preview task had it read the green stream (one XREADGROUP reads all its streams).
    marker = tenant.wait_for(create(tenant))
    assert marker["status"] == "succeeded" and marker["result"]["colour"] == "blue", marker
    assert not delivered(streams, GREEN_STREAM, message_id)
    task = tenant.get(waiting).json()
    assert task["status"] == "queued" and task["attempts"] == 0, task
    os.killpg(blue.pid, signal.SIGTERM)
    assert blue.wait(30) == 0
    workers("green")
    task = tenant.wait_for(waiting, timeout=20)
    assert task["status"] == "succeeded" and task["result"]["colour"] == "green", task
    shared = tenant.wait_for(create(tenant), timeout=20)  # the shared stream is every colour's
    assert shared["status"] == "succeeded" and shared["result"]["colour"] == "green", shared


def test_a_preview_task_no_worker_of_its_colour_reads_is_recovered_from_postgresql(workers, tenant, streams):
    workers("blue")  # no green worker: the green stream is never read
    task_id = create(tenant, preview=True)
    task = tenant.wait_for(task_id, timeout=30)  # after reconcile_after_seconds (2 s here)
    assert task["status"] == "succeeded" and task["attempts"] == 1, task
    assert task["result"]["colour"] == "blue", task  # taken from PostgreSQL, not from its stream
    [message_id] = message_ids(streams, GREEN_STREAM, task_id)
    assert not delivered(streams, GREEN_STREAM, message_id)


def test_a_draining_worker_takes_no_new_task_and_finishes_its_own(workers, platform, start_api, tenant):
    """How a release stops the old colour's workers: SIGTERM, then they finish what they hold
    while the new colour's workers take every new task."""
    tenant.base = start_api(TASKS_RELEASE_COLOUR="blue").url  # its preview tasks go to blue workers only
    blue, _green = workers("blue"), workers("green")
    held = create(tenant, "sleep", {"seconds": 3}, preview=True)
    tenant.wait_for(held, statuses=("running",), timeout=10)
    os.killpg(blue.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not any(json.loads(line).get("msg") == "finishing in-flight tasks"
                  for line in blue.log_path.read_text().splitlines() if line.startswith("{")):
        assert time.monotonic() < deadline, "the blue worker did not start draining"
        time.sleep(0.05)
    created_while_draining = create(tenant)
    task = tenant.wait_for(created_while_draining, timeout=20)
    assert task["status"] == "succeeded" and task["result"]["colour"] == "green", task
    assert blue.wait(30) == 0
    task = tenant.get(held).json()
    assert task["status"] == "succeeded" and task["attempts"] == 1, task


def test_a_stopping_worker_puts_back_at_once_what_it_took_but_did_not_start(tmp_path):
    """A read that was waiting when the worker was told to stop, and tasks recovered from
    PostgreSQL, go back on the streams: no other worker waits claim_idle_seconds or
    reconcile_after_seconds for them. In-process, on a Redis of its own (the session's shared
    stream holds other tests' unread messages)."""
    own_redis = Redis(tmp_path / "redis").start()
    config_file = tmp_path / "runtime.json"
    config_file.write_text(json.dumps(RUNTIME_DEFAULTS))
    config = FileConfigSource(config_file)
    config.load_initial()
    settings = ProcessSettings(release_colour="green", redis_host="127.0.0.1", redis_port=own_redis.port,
                               heartbeat_file=str(tmp_path / "heartbeat"))
    preview, shared, recovered = (str(uuid.uuid4()) for _ in range(3))

    async def scenario():
        worker = Worker(settings, FileSecretSource(tmp_path), config)  # no secret needed: Redis is given
        worker.use_redis(queue.connect("127.0.0.1", own_redis.port, own_redis.password))
        try:
            await worker._ensure_group()
            await queue.enqueue(worker.redis, preview, GREEN_STREAM)
            await queue.enqueue(worker.redis, shared, queue.STREAM)
            default = worker.lanes["default"]
            await worker._read(default, count=10, block_ms=1000)
            default.add(lanes.Waiting(None, recovered, queue.DEFAULT_PRIORITY))
            assert len(default) == 3
            await worker._shutdown()
            assert worker.lanes.backlog_size() == 0
            for stream in worker.streams:  # nothing left pending under the stopped consumer
                assert (await worker.redis.xpending(stream, queue.GROUP))["pending"] == 0
            # What the next worker reads: each task on the stream it came from.
            replies = await worker.redis.xreadgroup(queue.GROUP, "next-worker", {s: ">" for s in worker.streams},
                                                    count=10)
            return {stream.decode(): [fields[b"task_id"].decode() for _, fields in messages]
                    for stream, messages in replies}
        finally:
            await worker.redis.aclose()

    try:
        assert asyncio.run(scenario()) == {GREEN_STREAM: [preview], queue.STREAM: [shared, recovered]}
    finally:
        own_redis.stop()
