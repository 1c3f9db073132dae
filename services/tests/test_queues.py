"""Queues and priorities: a kind declares its queue (acme's ``acme-report`` on ``reports``,
``acme-ping`` on ``interactive``, ``tests/fixtures/acme_kinds``); each queue has its own slots and
rate limit in a worker, live from the runtime config; within a queue a higher priority starts
first. A real PostgreSQL, Redis, API and one worker of their own (the session's workers would
run these kinds too, and their slots would blur what is measured)."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
import requests

from conftest import Tenant, heartbeat, wait_worker_ready, wait_workers_config_version
from taskplatform_testing.servers import SERVICES, free_port, start_platform, write_config

from test_kinds_package import FIXTURES

QUEUES = {"reports": {"concurrency": 2}, "interactive": {"concurrency": 2}}


@pytest.fixture(scope="module")
def queues():
    """(platform, API URL, the worker), with acme's package on their path."""
    started = start_platform(queues=QUEUES)
    path = f"{SERVICES}:{FIXTURES}"
    try:
        url = started.start_api(processes=1, PYTHONPATH=path)
        port = free_port()
        worker = started.start_worker(PYTHONPATH=path, TASKS_WORKER_METRICS_PORT=port)
        worker.metrics = f"http://127.0.0.1:{port}/metrics"
        wait_worker_ready(worker)
        yield started, url, worker
    finally:
        started.stop()


@pytest.fixture
def tenant(queues) -> Tenant:
    platform, url, _ = queues
    return Tenant(url, platform)


@pytest.fixture
def configure(queues):
    """Apply ``queues`` (and other keys) to the running worker, without a restart; back to
    ``QUEUES`` after the test."""
    platform, _, worker = queues

    def apply(queue_settings: dict, **overrides) -> None:
        version = f"q-{uuid.uuid4().hex[:6]}"
        write_config(platform.config_file, version=version, queues=queue_settings, **overrides)
        deadline = time.monotonic() + 10
        while (heartbeat(worker) or {}).get("config_version") != version:
            assert time.monotonic() < deadline, f"the worker has not applied {version}"
            time.sleep(0.05)

    yield apply
    apply(QUEUES)


def create(tenant: Tenant, kind: str, payload: dict | None = None, **extra) -> str:
    answer = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": kind, "payload": payload or {}, **extra},
                                 timeout=10)
    assert answer.status_code == 202, answer.text
    return answer.json()["id"]


def wait_all(tenant: Tenant, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending, done = list(ids), {}
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} of {len(ids)} tasks not finished after {timeout} s"
        for task_id in list(pending):
            task = tenant.get(task_id).json()
            if task["status"] in ("succeeded", "dead", "cancelled"):
                done[task_id] = task
                pending.remove(task_id)
        time.sleep(0.05)
    tasks = [done[task_id] for task_id in ids]
    assert all(t["status"] == "succeeded" for t in tasks), [t for t in tasks if t["status"] != "succeeded"][:3]
    return tasks


def unfinished(tenant: Tenant, kind: str) -> int:
    count = 0
    for status in ("queued", "running"):
        page = tenant.session.get(f"{tenant.base}/v1/tasks", params={"kind": kind, "status": status, "limit": 100},
                                  timeout=10).json()
        count += len(page["items"])
    return count


def most_at_once(tasks: list[dict]) -> int:
    """The most attempts that ran at the same time, from their results' start and finish."""
    edges = sorted([(t["result"]["started_at"], 1) for t in tasks] + [(t["result"]["finished_at"], -1) for t in tasks])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_a_flooded_queue_at_its_limit_does_not_delay_another_queue(tenant, queues):
    """40 reports of 0.5 s at 2 at once need 10 s; 20 pings on their own queue are done while
    most of the reports still wait, each within a bound far below that."""
    reports = [create(tenant, "acme-report", {"seconds": 0.5}) for _ in range(40)]
    tenant.wait_until(reports[0], lambda task: task["status"] in ("running", "succeeded"), 10, "running")
    created = time.time()
    pings = [create(tenant, "acme-ping") for _ in range(20)]
    done = wait_all(tenant, pings, timeout=20)
    finished = time.time()
    still = unfinished(tenant, "acme-report")
    assert still >= 20, f"only {still} of 40 reports left when the pings were done: the pings waited behind them"
    latencies = sorted(t["result"]["at"] - created for t in done)
    # Enqueue → run for each ping (from the first create: the later ones waited less).
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    assert p95 < 3.0, f"ping p95 {p95:.2f} s (the reports' backlog drains in ~10 s)"
    assert finished - created < 8, f"pings took {finished - created:.1f} s"
    reports_done = wait_all(tenant, reports, timeout=60)
    assert most_at_once(reports_done) <= 2, "the reports ran beyond their queue's concurrency"


@pytest.mark.parametrize("reconcile_after_seconds", [30, 0.5], ids=["from-the-streams", "recovered-from-postgresql"])
def test_a_higher_priority_starts_before_the_lower_ones_waiting_in_its_queue(tenant, configure,
                                                                           reconcile_after_seconds):
    """The low ones wait in their stream (the high band is read first), or were taken from
    PostgreSQL by the reconciler into the worker (the high band is still read before they start)."""
    configure({"reports": {"concurrency": 1}}, reconcile_after_seconds=reconcile_after_seconds)
    low = [create(tenant, "acme-report", {"seconds": 0.4}, priority=1) for _ in range(8)]
    tenant.wait_until(low[0], lambda task: task["status"] == "running", 10, "running")
    high = create(tenant, "acme-report", {"seconds": 0.4}, priority=9)
    tasks = wait_all(tenant, low + [high], timeout=60)
    high_start = tasks[-1]["result"]["started_at"]
    before = [t for t in tasks[:-1] if t["result"]["started_at"] < high_start]
    # The one running when it came (the slot is taken; nothing else is read meanwhile).
    assert len(before) <= 1, f"{len(before)} low-priority tasks started before the high one"
    assert tasks[-1]["priority"] == 9 and tasks[0]["priority"] == 1


def test_a_queues_rate_limit_bounds_its_starts(tenant, configure):
    rate = 4
    configure({"reports": {"concurrency": 8, "rate_per_second": rate}})
    ids = [create(tenant, "acme-report", {"seconds": 0}) for _ in range(20)]
    starts = sorted(t["result"]["started_at"] for t in wait_all(tenant, ids, timeout=60))
    # In any second, at most the rate plus the bucket's one-start burst.
    most_in_a_second = max(sum(1 for s in starts if first <= s < first + 1) for first in starts)
    assert most_in_a_second <= rate + 1, f"{most_in_a_second} starts in one second (limit {rate}/s)"
    span = starts[-1] - starts[0]
    assert span >= (len(starts) - 2) / rate, f"20 starts in {span:.2f} s: faster than {rate}/s"


def starts_per_window(tasks: list[dict]) -> list[float]:
    return sorted(t["result"]["started_at"] for t in tasks)


def most_in_a_window(starts: list[float], window: float = 1.0) -> int:
    """The most starts in any ``window`` seconds (each start opening one)."""
    return max(sum(1 for s in starts if first <= s < first + window) for first in starts)


def test_a_queues_rate_limit_holds_over_three_workers_and_changes_live(tenant, queues, configure):
    """The rate is the cluster's: three workers together start at most the rate (plus the burst
    of a tenth of a second's worth, at least one start) in any second, and as many as it allows;
    a change applies to the running workers without a restart."""
    platform, _, worker = queues
    path = f"{SERVICES}:{FIXTURES}"
    others = [platform.start_worker(PYTHONPATH=path) for _ in range(2)]
    try:
        for other in others:
            wait_worker_ready(other)
        workers = [worker, *others]
        for rate, count in ((5, 30), (12, 48)):
            configure({"reports": {"concurrency": 8, "rate_per_second": rate}})
            wait_workers_config_version(workers, heartbeat(worker)["config_version"])
            # One batch: a backlog from the first start on, so the throughput is the limit's alone.
            answer = tenant.session.post(f"{tenant.base}/v1/tasks:batch", timeout=30, json={
                "tasks": [{"kind": "acme-report", "payload": {"seconds": 0}} for _ in range(count)]})
            assert answer.status_code == 202, answer.text
            ids = [item["task"]["id"] for item in answer.json()["items"]]
            starts = starts_per_window(wait_all(tenant, ids, timeout=60))
            most, span = most_in_a_window(starts), starts[-1] - starts[0]
            burst = max(1, rate // 10)
            print(f"\n3 workers at {rate}/s: {count} starts in {span:.2f} s ({(count - 1) / span:.2f}/s), "
                  f"at most {most} in one second")
            assert most <= rate + burst, f"{most} starts in one second over 3 workers (limit {rate}/s)"
            assert span >= (count - 1 - burst) / rate, f"{count} starts in {span:.2f} s: faster than {rate}/s"
            # As many as the rate allows: the three workers together are not held to a third of it.
            assert (count - 1) / span >= 0.75 * rate, f"{count} starts in {span:.2f} s: far below {rate}/s"
        assert all(w.poll() is None for w in workers)  # the same processes: no restart
    finally:
        platform.stop_processes(chosen=others)


def test_a_queues_concurrency_changes_live(tenant, queues, configure):
    _, _, worker = queues
    configure({"reports": {"concurrency": 1}})
    first = [create(tenant, "acme-report", {"seconds": 0.3}) for _ in range(4)]
    before = wait_all(tenant, first, timeout=30)
    assert most_at_once(before) == 1
    configure({"reports": {"concurrency": 4}})
    after = wait_all(tenant, [create(tenant, "acme-report", {"seconds": 1}) for _ in range(8)], timeout=30)
    assert most_at_once(after) >= 3, "the raised concurrency did not apply"
    assert most_at_once(after) <= 4
    assert worker.poll() is None  # the same worker: no restart
    metrics = requests.get(worker.metrics, timeout=5).text
    assert 'worker_queue_slots{queue="reports"} 4.0' in metrics, metrics


def test_the_api_validates_and_documents_the_priority(tenant, queues):
    _, url, _ = queues
    for bad in (10, -1, "5", 5.5, None):
        answer = tenant.session.post(f"{url}/v1/tasks", json={"kind": "acme-ping", "payload": {}, "priority": bad},
                                     timeout=10)
        assert answer.status_code == 422, (bad, answer.text)
    task = tenant.get(create(tenant, "acme-ping")).json()
    assert task["priority"] == 5
    assert tenant.get(create(tenant, "acme-ping", priority=7.0)).json()["priority"] == 7  # a JSON integer
    schema = requests.get(f"{url}/openapi.json", timeout=10).json()["components"]["schemas"]["CreateAcmePingTask"]
    assert schema["properties"]["priority"]["minimum"] == 0 and schema["properties"]["priority"]["maximum"] == 9


def test_a_row_an_older_release_wrote_runs_in_its_kinds_queue(tenant, queues):
    """No priority or queue named (a release before migration 0009): priority 5, and the
    reconciler routes it to its kind's queue."""
    platform, _, _ = queues
    task_id = uuid.uuid4()
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, tenant, kind, payload, status, max_attempts, queued_at) "
                     "VALUES (%s, %s, 'acme-ping', '{}', 'queued', 3, clock_timestamp())", (task_id, tenant.name))
    task = tenant.wait_for(str(task_id), timeout=20)
    assert task["status"] == "succeeded" and task["priority"] == 5


def test_queue_stats_and_metrics_are_per_queue(tenant, queues, configure):
    platform, _, worker = queues
    configure({"reports": {"concurrency": 1}})
    # 4 × 2 s of work: longer than the worker's queue metrics interval (5 s), so its refresh
    # finds reports still queued (with 4 × 1 s the queue could drain before one).
    ids = [create(tenant, "acme-report", {"seconds": 2}) for _ in range(4)]
    tenant.wait_until(ids[0], lambda task: task["status"] == "running", 10, "running")
    stats = platform.run("queue-stats", PYTHONPATH=f"{SERVICES}:{FIXTURES}")
    assert stats.returncode == 0, stats.stderr

    doc = json.loads(stats.stdout)
    assert set(doc["queues"]) >= {"default", "reports", "interactive"}
    assert doc["queues"]["reports"]["running"] == 1 and doc["queues"]["reports"]["queued"] >= 2
    assert doc["kinds"]["acme-report"]["running"] == 1
    deadline = time.monotonic() + 10
    while 'queue_tasks_queued{queue="reports"} 0.0' in (text := requests.get(worker.metrics, timeout=5).text) \
            or 'queue_tasks_queued{queue="reports"}' not in text:
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert 'worker_queue_running{queue="reports"} 1.0' in text
    assert 'queue_tasks_queued{queue="interactive"} 0.0' in text
    wait_all(tenant, ids, timeout=30)


def test_a_schedule_gives_its_tasks_its_priority(tenant, queues):
    _, url, _ = queues
    for bad in (10, "9"):
        refused = tenant.session.post(f"{url}/v1/schedules", json={"kind": "acme-ping", "interval_seconds": 1,
                                                                    "priority": bad}, timeout=10)
        assert refused.status_code == 422, refused.text
    answer = tenant.session.post(f"{url}/v1/schedules", json={"kind": "acme-ping", "interval_seconds": 1,
                                                               "priority": 8}, timeout=10)
    assert answer.status_code == 201 and answer.json()["priority"] == 8, answer.text
    schedule_id = answer.json()["id"]
    try:
        deadline = time.monotonic() + 15
        while True:
            page = tenant.session.get(f"{url}/v1/tasks", params={"kind": "acme-ping", "status": "succeeded"},
                                      timeout=10).json()["items"]
            if page:
                break
            assert time.monotonic() < deadline, "the schedule made no task"
            time.sleep(0.1)
        assert {task["priority"] for task in page} == {8}
    finally:
        tenant.session.delete(f"{url}/v1/schedules/{schedule_id}", timeout=10)
