"""What an operator sees: log lines that name their request or task and carry tracebacks,
metrics that say what the platform does, the state of the runtime config's hot reload."""

import json
import logging
import time

import requests

from taskplatform import logs


def log_lines(platform, process: str) -> list[dict]:
    """Every JSON line the platform's ``process`` processes (api, worker) have logged so far."""
    lines = []
    for path in sorted(platform.root.glob(f"{process}-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


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
        failing = wait_config_state(api_url, lambda s: s["watch"]["state"] == "failing", "failing")
        assert failing["watch"]["failing_since"] <= time.time() and failing["version"] == "1", failing
        assert "IsADirectoryError" in failing["watch"]["last_error"], failing
        assert scrape(f"{api_url}/metrics", "config_watch_errors_total") >= errors_before + 2  # each process
    finally:
        platform.config_file.rmdir()
    runtime_config(log_level="DEBUG")  # retried: the new version is applied everywhere
    state = wait_config_state(api_url, lambda s: s["watch"]["state"] == "ok", "ok")
    assert state["watch"]["failing_since"] is None and state["watch"]["failures_in_a_row"] == 0
    watch_errors = [line for line in log_lines(platform, "api") if line["msg"].startswith("runtime config watch failed")]
    assert watch_errors and "IsADirectoryError" in watch_errors[-1]["traceback"]
