"""What an operator sees: log lines that name their request or task and carry tracebacks,
metrics that say what the platform does, the state of the runtime config's hot reload."""

import json
import logging

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
