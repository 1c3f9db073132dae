"""What an operator sees: log lines that name their request or task and carry tracebacks,
metrics that say what the platform does, the state of the runtime config's hot reload."""

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Tenant, log_lines, wait_config_version, wait_worker_ready
from taskplatform import logs
from taskplatform_testing.servers import free_port, start_platform, write_config


@pytest.fixture(scope="module")
def quiet():
    """(platform, API URL) of their own for the tests that count what their one worker ran: on the
    session's platform, tasks earlier tests left queued would be run and counted too — which
    tests ran earlier is not fixed (under pytest-xdist each worker runs its own share of the
    files), and draining what they left takes up to half a minute."""
    started = start_platform()
    try:
        yield started, started.start_api(processes=2)
    finally:
        started.stop()


def test_an_exception_is_logged_with_its_traceback_and_the_context_ids():
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(logs.JsonFormatter().format(record)))

    logger, keep = logging.getLogger("test.observability"), Keep()
    logger.addHandler(keep)
    tokens = logs.task_id.set("task-1"), logs.request_id.set("request-1")
    try:
        raise KeyError("boom")
    except KeyError:
        logger.exception("unhandled error")
    finally:
        logs.task_id.reset(tokens[0])
        logs.request_id.reset(tokens[1])
        logger.removeHandler(keep)
    assert lines[0]["task_id"] == "task-1" and lines[0]["request_id"] == "request-1"
    assert lines[0]["error"] == "KeyError('boom')"
    assert 'raise KeyError("boom")' in lines[0]["traceback"], lines[0]


def test_an_enqueue_failure_is_logged_with_the_request_id(platform, tenant):
    platform.redis.stop()
    try:
        response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "payload": {}},
                                       headers={"X-Request-Id": "enqueue-fails-1"}, timeout=30)
        assert response.status_code == 202, response.text
    finally:
        platform.redis.start()
    failed = [line for line in log_lines(platform, "api") if line["msg"].startswith("enqueue failed")
              and line.get("task_id") == response.json()["id"]]
    assert failed and failed[0].get("request_id") == "enqueue-fails-1", failed


def test_a_created_task_s_request_line_names_it_and_the_worker_logs_its_success(platform, tenant):
    """What `make trace` links: the request that created a task names it on its access line, and
    the worker that ran it logs its success with the task's id."""
    response = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "payload": {"x": 1}},
                                   headers={"X-Request-Id": "trace-link-1"}, timeout=30)
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    # The access line is written once the response is sent: the client may read it first.
    deadline = time.monotonic() + 10
    while not (created := [line for line in log_lines(platform, "api")
                           if line.get("request_id") == "trace-link-1" and line["msg"] == "request"]):
        assert time.monotonic() < deadline, "no access line for request trace-link-1 after 10 s"
        time.sleep(0.05)
    assert [line.get("task_id") for line in created] == [task_id], created
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=free_port())
    try:
        wait_worker_ready(worker)
        assert tenant.wait_for(task_id)["status"] == "succeeded"
    finally:
        platform.stop_workers()
    done = [line for line in log_lines(platform, "worker") if line.get("task_id") == task_id]
    assert [line["msg"] for line in done] == ["task succeeded"], done
    assert done[0]["attempt"] == 1 and done[0]["run_ms"] >= 0, done


def wait_config_state(api_url: str, condition, what: str, timeout: float = 20) -> dict:
    """Until every API process answers ``GET /v1/config`` with a state meeting ``condition``
    (ten answers in a row: the requests spread over the processes)."""
    deadline = time.monotonic() + timeout
    in_a_row = 0
    while in_a_row < 10:
        state = requests.get(f"{api_url}/v1/config", timeout=5).json()
        in_a_row = in_a_row + 1 if condition(state) else 0
        assert time.monotonic() < deadline, f"config state not {what} after {timeout}s: {state}"
        time.sleep(0.05)
    return state


def test_a_config_that_is_not_utf8_is_rejected_with_its_reason_and_hot_reload_goes_on(platform, api_url,
                                                                                       runtime_config):
    platform.config_file.write_bytes(b'{"version": "\xff"}')
    rejected = wait_config_state(api_url, lambda s: s["rejected"] is not None, "rejected")
    assert rejected["version"] == "1" and "not valid JSON" in rejected["rejected"]["reason"], rejected
    runtime_config(log_level="DEBUG")  # returns once applied everywhere: the watch still runs
    assert requests.get(f"{api_url}/v1/config", timeout=5).json()["rejected"] is None


def scrape(url: str, name: str) -> float:
    """The sum of a metric's samples (every label set) in a Prometheus text exposition."""
    text = requests.get(url, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def test_an_unreadable_config_source_is_retried_counted_and_shown_stale(platform, api_url, runtime_config):
    errors_before = scrape(f"{api_url}/metrics", "config_watch_errors_total")
    platform.config_file.unlink()
    platform.config_file.mkdir()  # reading it now fails (IsADirectoryError), also as root
    try:
        # A poll between the unlink and the mkdir fails on the missing file first: wait for the
        # failure this test makes, the directory.
        failing = wait_config_state(api_url, lambda s: s["watch"]["state"] == "failing"
                                    and "IsADirectoryError" in (s["watch"]["last_error"] or ""), "failing on the directory")
        assert failing["watch"]["failing_since"] <= time.time() and failing["version"] == "1", failing
        assert "IsADirectoryError" in failing["watch"]["last_error"], failing
        assert scrape(f"{api_url}/metrics", "config_watch_errors_total") >= errors_before + 2  # each process
    finally:
        platform.config_file.rmdir()
    runtime_config(log_level="DEBUG")  # retried: the new version is applied everywhere
    state = wait_config_state(api_url, lambda s: s["watch"]["state"] == "ok", "ok")
    assert state["watch"]["failing_since"] is None and state["watch"]["failures_in_a_row"] == 0
    watch_errors = [line for line in log_lines(platform, "api")
                    if line["msg"].startswith("runtime config watch failed")]
    # (the last one may be the missing file again, between the rmdir and the new config's write)
    assert any("IsADirectoryError" in line["traceback"] for line in watch_errors), watch_errors[-3:]


def samples(url: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of each sample of ``name`` in a Prometheus text exposition."""
    found = []
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        found += [(sample.labels, sample.value) for sample in family.samples if sample.name == name]
    return found


def test_the_config_version_metric_names_only_the_applied_version_after_a_reload(api_url, runtime_config):
    version = runtime_config(log_level="DEBUG")
    deadline = time.monotonic() + 10
    while {labels["version"] for labels, _ in samples(f"{api_url}/metrics", "config_version_info")} != {version}:
        assert time.monotonic() < deadline, samples(f"{api_url}/metrics", "config_version_info")
        time.sleep(0.1)
    exported = samples(f"{api_url}/metrics", "config_version_info")
    assert len(exported) == 2 and all(value == 1 for _, value in exported), exported  # one per API process


def test_a_scrape_asks_nothing_of_the_tasks_table(platform, api_url):
    """It answers at once while the table is locked (a count per status used to wait for it)."""
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password) as conn:
        conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        for _ in range(4):  # every API process
            assert requests.get(f"{api_url}/metrics", timeout=2).status_code == 200
        conn.rollback()


def test_the_worker_exports_run_time_and_queue_wait_per_kind(quiet):
    platform, api_url = quiet
    tenant = Tenant(api_url, platform)
    port = free_port()
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=port)
    try:
        wait_worker_ready(worker)
        task = tenant.wait_for(tenant.create("sleep", {"seconds": 0.3}).json()["id"])
        assert task["status"] == "succeeded"
        url = f"http://127.0.0.1:{port}/metrics"
        run = dict((labels["kind"], value) for labels, value in samples(url, "task_run_seconds_sum"))
        waited = dict((labels["kind"], value) for labels, value in samples(url, "task_queue_wait_seconds_count"))
        assert run["sleep"] >= 0.3 and waited["sleep"] == 1, (run, waited)
        assert samples(url, "worker_tasks_running") == [({}, 0.0)]
        assert samples(url, "worker_slots") == [({}, 4.0)]  # the runtime config's worker_concurrency
    finally:
        platform.stop_workers()


def by_label(url: str, name: str, label: str) -> dict[str, float]:
    return {labels[label]: value for labels, value in samples(url, name)}


def wait_metrics(url: str, condition, what: str, timeout: float = 20) -> None:
    """Until ``condition(url)`` holds for a scrape of ``url``."""
    deadline = time.monotonic() + timeout
    while not condition(url):
        assert time.monotonic() < deadline, f"{url}: not {what} after {timeout}s"
        time.sleep(0.1)


def test_tasks_are_counted_by_kind_created_completed_failed_and_dead(quiet):
    platform, api_url = quiet
    tenant = Tenant(api_url, platform)
    created_before = by_label(f"{api_url}/metrics", "tasks_created_total", "kind")
    port = free_port()
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=port)
    try:
        wait_worker_ready(worker)
        ids = [tenant.create("checksum").json()["id"] for _ in range(2)]
        ids.append(tenant.create("fail", {"always": True}).json()["id"])
        done = [tenant.wait_for(task_id)["status"] for task_id in ids]
        assert done == ["succeeded", "succeeded", "dead"], done
        created = by_label(f"{api_url}/metrics", "tasks_created_total", "kind")
        assert created["checksum"] - created_before.get("checksum", 0) == 2, (created_before, created)
        assert created["fail"] - created_before.get("fail", 0) == 1, (created_before, created)
        url = f"http://127.0.0.1:{port}/metrics"
        # Every known kind from the start (increase() sees a kind's first task), the rest 0.
        assert by_label(url, "tasks_completed_total", "kind") == {"checksum": 2, "sleep": 0, "fail": 0, "smoke": 0,
                                                                  "other": 0}
        assert by_label(url, "tasks_failed_total", "kind")["fail"] == 2  # task_max_attempts 3: two retried
        assert by_label(url, "tasks_dead_total", "kind") == {"checksum": 0, "sleep": 0, "fail": 1, "smoke": 0,
                                                             "other": 0}
        assert samples(url, "tasks_created_total") == []  # the API's business, not exported at 0 here
    finally:
        platform.stop_workers()


def test_the_worker_exports_the_queue_depth_and_the_oldest_queued_tasks_age(quiet):
    """From PostgreSQL every queue_metrics_interval_seconds; a scrape only reads the last answer.
    On a platform of its own: on the session's, a task an earlier test left to retry comes back to
    the queue at its backoff's end, and the count moves under the test."""
    platform, api_url = quiet
    tenant = Tenant(api_url, platform)
    waiting = [tenant.create("sleep", {"seconds": 0}).json()["id"] for _ in range(2)]
    # Nothing runs: what is queued stays so, the count holds still (the worker reads it at start).
    version = "queue-metrics"
    write_config(platform.config_file, version=version, enabled_kinds=[])
    wait_config_version(api_url, version)
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET queued_at = clock_timestamp() - interval '1 hour' WHERE id = %s",
                     (waiting[0],))
    port = free_port()
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=port, TASKS_QUEUE_METRICS_INTERVAL_SECONDS=0.2)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_worker_ready(worker)
        wait_metrics(url, lambda u: samples(u, "tasks_queued"), "showing the queue")
        (_, queued), = samples(url, "tasks_queued")
        (_, oldest), = samples(url, "tasks_oldest_queued_age_seconds")
        assert queued >= 2 and 3600 <= oldest < 3660, (queued, oldest)
        assert tenant.session.post(f"{tenant.base}/v1/tasks/{waiting[0]}/cancel", timeout=10).status_code == 200
        # One fewer waits, and the oldest now is younger (the other one is not an hour old).
        wait_metrics(url, lambda u: samples(u, "tasks_queued") == [({}, queued - 1)]
                     and samples(u, "tasks_oldest_queued_age_seconds")[0][1] < 3600, "updated after a cancel")
    finally:
        platform.stop_workers()
        for task_id in waiting[1:]:
            tenant.session.post(f"{tenant.base}/v1/tasks/{task_id}/cancel", timeout=10)
        write_config(platform.config_file)
        wait_config_version(api_url, "1")


def pool_state(url: str) -> tuple[float, float, float, float]:
    """(in use, idle, waiting, max) as a scrape of ``url`` says."""
    connections = by_label(url, "db_pool_connections", "state")
    return (connections.get("in_use"), connections.get("idle"), samples(url, "db_pool_waiting")[0][1],
            samples(url, "db_pool_max")[0][1])


def test_the_database_pools_in_use_idle_and_waiting_summed_over_the_api_processes(platform, start_api):
    """Two processes with one connection each: three reads held on a locked table take both
    connections, or one while two wait for it. (Reads: creates in flight in one process share
    one INSERT, ``creates``, so two there would hold one connection and wait for none.)"""
    api = start_api(processes=2, TASKS_PG_POOL_SIZE=1, TASKS_PG_ACQUIRE_TIMEOUT_SECONDS=30)
    url, tenant = f"{api.url}/metrics", Tenant(api.url, platform)
    wait_metrics(url, lambda u: pool_state(u) == (0, 2, 0, 2), "two idle connections of two")
    with psycopg.connect(host="127.0.0.1", port=platform.pg.port, dbname=platform.pg.database,
                         user=platform.pg.user, password=platform.pg.password) as conn:
        conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        with ThreadPoolExecutor(3) as pool:
            reads = [pool.submit(tenant.session.get, f"{api.url}/v1/tasks", timeout=60) for _ in range(3)]
            try:
                wait_metrics(url, lambda u: (lambda s: s[0] + s[2] == 3 and s[0] + s[1] == 2 and s[2] >= 1)(
                    pool_state(u)), "three reads holding or waiting for a connection")
            finally:
                conn.rollback()
            assert [r.result().status_code for r in reads] == [200] * 3
    wait_metrics(url, lambda u: pool_state(u) == (0, 2, 0, 2), "every connection idle again")


def test_the_release_and_the_workers_pool_are_exported(platform, api_url):
    assert samples(f"{api_url}/metrics", "release_info") == [({"colour": "green", "version": "test-1"}, 1.0)]
    port = free_port()
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=port, TASKS_RELEASE_COLOUR="",
                                   TASKS_BUILD_VERSION="test-2", TASKS_PG_POOL_SIZE=3)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_worker_ready(worker)
        assert samples(url, "release_info") == [({"colour": "none", "version": "test-2"}, 1.0)]
        in_use, idle, waiting, most = pool_state(url)
        assert most == 3 and in_use + idle >= 1 and waiting == 0, (in_use, idle, waiting, most)
    finally:
        platform.stop_workers()
