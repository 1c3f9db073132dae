"""The runtime config's switches of an incident, applied by hot reload to running processes:
maintenance (writes refused; reads, readiness and the workers go on) and the enabled task kinds
(creates refused; a queued task waits without counting an attempt and runs once its kind is
enabled again). Against the real API processes, a worker, PostgreSQL and Redis."""

import datetime as dt
import json
import re
import time
import uuid

import pytest
import redis
import requests

from conftest import heartbeat, wait_worker_ready
from taskplatform import kinds, queue
from taskplatform.gates import WRITE_METHODS
from taskplatform.runtime_config import ConfigRejected, parse_config, validate_document
from taskplatform_testing.servers import RUNTIME_DEFAULTS
from test_api import assert_error
from test_observability import scrape
from test_store import run_with_store
from test_worker import stream_drained


@pytest.fixture
def start_worker(platform):
    """Start a worker when the test wants one (none runs before): stopped when the test ends."""
    started = []

    def start():
        worker = platform.start_worker()
        started.append(worker)
        wait_worker_ready(worker)
        return worker

    yield start
    platform.stop_processes(chosen=started)


def test_the_switches_default_to_open_and_a_kind_only_a_newer_release_knows_is_refused_by_the_deploy_alone():
    config = validate_document(dict(RUNTIME_DEFAULTS))
    assert not config.maintenance and config.maintenance_retry_after_seconds == 30
    assert config.runnable_kinds() == kinds.names()
    newer = dict(RUNTIME_DEFAULTS, enabled_kinds=["checksum", "resize"])
    with pytest.raises(ConfigRejected, match=r"enabled_kinds: unknown task kinds \['resize'\]"):
        validate_document(newer)
    # A running instance applies the document (a newer release beside it may run resize).
    assert parse_config(json.dumps(newer).encode()).config.runnable_kinds() == ["checksum"]
    with pytest.raises(ConfigRejected, match="maintenance_retry_after_seconds"):
        validate_document(dict(RUNTIME_DEFAULTS, maintenance_retry_after_seconds=30_000))


def test_maintenance_refuses_writes_only_and_ends_by_hot_reload(api_url, tenant, runtime_config, start_worker):
    waiting = tenant.create("checksum", {"n": 1}).json()  # no worker yet: it stays queued
    runtime_config(maintenance=True, maintenance_retry_after_seconds=7)  # applied by every API process
    refused = tenant.create("checksum", {"n": 2})
    assert_error(refused, 503, "maintenance")
    assert refused.headers["Retry-After"] == "7"
    for action in ("cancel", "retry"):
        assert_error(tenant.session.post(f"{api_url}/v1/tasks/{waiting['id']}/{action}", timeout=10), 503, "maintenance")
    # Before authentication: no Redis call (rate limit) for a write that cannot be done anyway.
    assert_error(requests.post(f"{api_url}/v1/tasks", json={"kind": "checksum"}, timeout=10), 503, "maintenance")
    assert tenant.get(waiting["id"]).json()["status"] == "queued"
    assert [t["id"] for t in tenant.session.get(f"{api_url}/v1/tasks", timeout=10).json()["items"]] == [waiting["id"]]
    ready = requests.get(f"{api_url}/health/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert requests.get(f"{api_url}/v1/config", timeout=10).json()["maintenance"] is True
    assert scrape(f"{api_url}/metrics", "maintenance_mode") == 1
    start_worker()  # workers go on with what was queued
    assert tenant.wait_for(waiting["id"])["status"] == "succeeded"

    runtime_config()  # maintenance off, in the same processes
    assert tenant.create("checksum", {"n": 3}).status_code == 202
    assert requests.get(f"{api_url}/v1/config", timeout=10).json()["maintenance"] is False
    assert scrape(f"{api_url}/metrics", "maintenance_mode") == 0


def test_the_openapi_documents_the_refusals_of_the_switches_on_every_write(api_url):
    doc = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    writes = [operation for path, operations in doc["paths"].items() if path.startswith("/v1/")
              for method, operation in operations.items() if method.upper() in WRITE_METHODS]
    assert len(writes) >= 3  # create, cancel, re-drive
    for operation in writes:
        assert "`maintenance`" in operation["responses"]["503"]["description"], operation["operationId"]
    assert "`kind_disabled`" in doc["paths"]["/v1/tasks"]["post"]["responses"]["409"]["description"]


def wait_pass_begun_after(worker, moment: float, timeout: float = 30) -> None:
    """Until the worker has run a whole maintenance pass begun after ``moment`` (epoch seconds):
    it writes its heartbeat at the end of each pass, so the second one written after it."""
    deadline = time.monotonic() + timeout
    for _ in range(2):
        while (heartbeat(worker) or {}).get("at", 0) <= moment:
            assert worker.poll() is None, f"worker exited with {worker.returncode}"
            assert time.monotonic() < deadline, f"no maintenance pass after {moment} in {timeout}s"
            time.sleep(0.05)
        moment = heartbeat(worker)["at"]


def test_a_disabled_kind_is_refused_and_its_queued_task_waits_without_an_attempt(platform, api_url, tenant,
                                                                                  runtime_config, start_worker):
    waiting = tenant.create("sleep", {"seconds": 0}).json()  # enabled when created; no worker yet
    runtime_config(enabled_kinds=["checksum", "fail"])
    refused = tenant.create("sleep", {"seconds": 0})
    assert_error(refused, 409, "kind_disabled")
    assert "'sleep' is disabled by the runtime config" in refused.json()["message"]
    assert_error(tenant.create("resize"), 422, "invalid_request")  # an unknown kind is still invalid
    assert tenant.create("checksum").status_code == 202
    assert requests.get(f"{api_url}/v1/config", timeout=10).json()["enabled_kinds"] == ["checksum", "fail"]

    worker = start_worker()
    client = redis.Redis(port=platform.redis.port, password=platform.redis.password)
    # The worker was handed its message (every message delivered and acked) and its reconciler
    # had a pass with it overdue (queued longer than reconcile_after_seconds): it ran neither time.
    deadline = time.monotonic() + 30
    while not stream_drained(client):
        assert time.monotonic() < deadline, client.xinfo_groups(queue.STREAM)
        time.sleep(0.05)
    overdue = dt.datetime.fromisoformat(waiting["created_at"]).timestamp() + RUNTIME_DEFAULTS["reconcile_after_seconds"]
    wait_pass_begun_after(worker, overdue)
    still = tenant.get(waiting["id"]).json()
    assert still["status"] == "queued" and still["attempts"] == 0, still

    runtime_config()  # every kind enabled again: the reconciler brings it, its first attempt
    done = tenant.wait_for(waiting["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done


def test_the_claim_and_the_reconciler_leave_a_task_of_a_kind_they_may_not_run(platform):
    async def scenario(tasks, pool):
        task, _ = await tasks.create(f"tenant-{uuid.uuid4().hex[:8]}", "sleep", {"seconds": 0}, 3, None)
        task_id = uuid.UUID(task["id"])
        # Overdue, and alone so: other tests' queued tasks are younger than half an hour.
        await pool.execute("UPDATE tasks SET updated_at = clock_timestamp() - interval '1 hour' WHERE id = $1", task_id)
        assert await tasks.claim(task_id, 30, ["checksum"]) == (None, None)
        assert task_id not in await tasks.take_overdue(1800, 1000, ["checksum"])
        assert dict(await pool.fetchrow("SELECT status, attempts FROM tasks WHERE id = $1", task_id)) == {
            "status": "queued", "attempts": 0}
        assert await tasks.take_overdue(1800, 1000, ["checksum", "sleep"]) == [task_id]
        claim, _ = await tasks.claim(task_id, 30, ["checksum", "sleep"])
        assert claim.attempts == 1
    run_with_store(platform, scenario)


def test_retention_periods_are_bounded_and_name_known_kinds():
    config = validate_document(dict(RUNTIME_DEFAULTS))
    assert config.retention_seconds is None and not config.retains()  # kept for ever unless said
    assert validate_document(dict(RUNTIME_DEFAULTS, retention_seconds_by_tenant={"acme": 600})).retains()
    for refused, says in (({"retention_seconds": 5}, "greater than or equal to 60"),
                          ({"retention_seconds": 10 ** 12}, "less than or equal to"),
                          ({"retention_seconds_by_kind": {"chekcsum": 3600}}, "unknown task kinds ['chekcsum']")):
        with pytest.raises(ConfigRejected, match=re.escape(says)):
            validate_document(dict(RUNTIME_DEFAULTS, **refused))
