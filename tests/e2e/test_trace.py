"""`make trace ENGINES=1` (every engine's logs; tests/e2e/test_logs.py reads the log store) on the
rolled-out environment: a task created through the edge is followed by the id the edge answered
with, across the edge, the router, the API and the worker that ran it, in the order of the calls
(callers first); by its task id the same lines come back. Read-only but for that one task.
`make logs SINCE= LEVEL=` keeps what it says it keeps."""

import json
import time

import pytest

from shipyard.inventory import load_environment
from tests.drill_traffic import api_client

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def traced_task(env_name) -> tuple[str, str]:
    """(request id, task id) of a task that failed once, then succeeded: the worker logs both."""
    client = api_client(load_environment(REPO, env_name))
    created = client.post(f"{client.base}/v1/tasks", json={"kind": "fail", "payload": {"times": 1}}, timeout=10)
    assert created.status_code == 202, created.text
    request_id, task_id = created.headers["X-Request-ID"], created.json()["id"]
    deadline = time.monotonic() + 60
    while (status := client.get(f"{client.base}/v1/tasks/{task_id}", timeout=10).json()["status"]) != "succeeded":
        assert time.monotonic() < deadline, f"task {task_id} is {status} after 60 s"
        time.sleep(0.2)
    return request_id, task_id


COLUMNS = ("started (UTC)", "since prev", "since first", "took", "where", "line")


def trace_rows(env_name: str, *args: str) -> list[dict[str, str]]:
    """`shipyard trace`'s rows, each cell cut at its header's column."""
    done = run_shipyard("trace", "--env", env_name, "--since", "15m", "--engines", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    header, *rows = done.stdout.splitlines()[1:]
    starts = [header.index(name) for name in COLUMNS]
    ends = [*starts[1:], None]
    return [{name: row[a:b].strip() for name, a, b in zip(COLUMNS, starts, ends)} for row in rows]


def _services(rows: list[dict[str, str]]) -> list[str]:
    return [row["where"].split()[-1] for row in rows]  # "<host> <service>"


def _worker_rows_complete(rows) -> bool:
    return any('"msg": "task succeeded"' in row["line"] for row in rows)


def test_a_request_is_followed_through_edge_router_api_and_worker_in_order(env_name, traced_task):
    request_id, task_id = traced_task
    deadline = time.monotonic() + 30  # the worker's line reaches the engine's log just after the task's state
    while not _worker_rows_complete(rows := trace_rows(env_name, "--request-id", request_id)):
        assert time.monotonic() < deadline, f"no worker line for task {task_id} in the trace:\n{rows}"
        time.sleep(0.5)
    services = _services(rows)
    # The access lines first, callers before callees: the proxies before the API, the outer proxy
    # (longer) before the inner (at equal milliseconds they keep the order they started in).
    assert set(services[:2]) == {"edge", "router"} and services[2].startswith("api-"), rows
    took = [float(row["took"].removesuffix("ms")) for row in rows[:2]]
    assert took[0] >= took[1], rows  # the outer proxy's span holds the inner one's
    workers = services[3:]
    assert workers and all(s.startswith("worker-") for s in workers), rows
    lines = [row["line"] for row in rows]
    assert all(f"rid={request_id} " in line for line in lines[:2]), lines[:2]  # the edge's id, kept by the router
    api = json.loads(lines[2])
    assert (api["request_id"], api["task_id"], api["status"]) == (request_id, task_id, 202), api
    assert [json.loads(line)["msg"] for line in lines[3:]] == ["task failed", "task succeeded"], lines[3:]
    assert all(json.loads(line)["task_id"] == task_id for line in lines[3:])
    # Each access line's hop started its duration before it was logged: the edge's first.
    assert all(rows[n]["took"].endswith("ms") for n in range(3)), rows
    # The worker's lines came after the request's hops, in the order they were logged.
    since_first = [float(row["since first"].strip("+ms")) for row in rows]
    assert since_first[0] == 0 and since_first[3:] == sorted(since_first[3:]), rows
    assert min(since_first[3:]) > max(since_first[:3]) - 5, rows  # within the start estimates' jitter


def test_a_task_is_followed_back_to_the_request_that_created_it(env_name, traced_task):
    request_id, task_id = traced_task
    by_request = trace_rows(env_name, "--request-id", request_id)
    by_task = trace_rows(env_name, "--task-id", task_id)
    assert by_task == by_request


def test_an_unknown_id_finds_nothing_and_says_where_it_looked(env_name):
    done = run_shipyard("trace", "--env", env_name, "--request-id", "no-such-request-0000", "--since", "5m", "--engines")
    assert done.returncode == 1
    assert "no line of request no-such-request-0000 in the logs of" in done.stdout
    stored = run_shipyard("trace", "--env", env_name, "--request-id", "no-such-request-0000", "--since", "5m")
    assert stored.returncode == 1
    assert "no line of request no-such-request-0000 in the log store (elasticsearch-1 on" in stored.stdout


def test_logs_since_and_level_keep_what_they_say(env_name, traced_task):
    _, task_id = traced_task
    client = api_client(load_environment(REPO, env_name))
    assert client.get(f"{client.base}/v1/tasks/{task_id}", timeout=10).status_code == 200
    recent = run_shipyard("logs", "--env", env_name, "--service", "edge", "--since", "2m", "--tail", "1000")
    assert recent.returncode == 0 and f"/v1/tasks/{task_id} " in recent.stdout, recent.stdout[-2000:]
    future = run_shipyard("logs", "--env", env_name, "--service", "edge", "--since", str(time.time() + 3600))
    assert [line for line in future.stdout.splitlines() if not line.startswith("==> ")] == []
    warnings = run_shipyard("logs", "--env", env_name, "--service", "taskplatform", "--since", "15m",
                            "--level", "warning", "--tail", "10000")
    assert warnings.returncode == 0, warnings.stderr
    levels = [json.loads(line)["level"] for line in warnings.stdout.splitlines() if line.startswith("{")]
    assert "info" not in levels and "debug" not in levels, levels
    everything = run_shipyard("logs", "--env", env_name, "--service", "taskplatform", "--since", "15m",
                              "--tail", "10000")
    assert '"level": "info"' in everything.stdout  # so the filter above had info lines to drop
