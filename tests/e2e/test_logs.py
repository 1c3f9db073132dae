"""Central logs on the rolled-out environment (docs/logs.md): every hop of a request through the
edge is in the log store with its parsed fields; `make trace` reads it from there; the audit
trail's events reach it in order; the store stopped for 60 s under traffic loses no line of that
window; and, after every other test of the run, no secret value is in any stored line.

The store here is the stand-in (osmem-server, images.source local); the shipper, its parsing and
buffering, the index template and the searches are the real ones. Loopback only, bounded."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import docker
import pytest
import requests

from shipyard import topology
from shipyard.inventory import load_environment
from shipyard.secretstore import load_or_create
from tests.drill_traffic import Traffic, api_client, wait_all_processed

from .conftest import REPO, run_shipyard

OUTAGE_S = 60


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


@pytest.fixture(scope="module")
def store(settings) -> str:
    """The store's URL on loopback, with the environment's index pattern."""
    bind, port = topology.build(settings).published(settings.hosts[0], "elasticsearch-1")
    return f"http://{bind}:{port}/shipyard-logs-{settings.name}-*"


def search(store: str, query: dict, size: int = 1000, **extra) -> list[dict]:
    answer = requests.post(f"{store}/_search", json={"query": query, "size": size, **extra}, timeout=30)
    answer.raise_for_status()
    return [hit["_source"] for hit in answer.json()["hits"]["hits"]]


def wait_for(what: str, timeout_s: float, found):
    """``found()`` until it returns something true (polled every half second), or fail saying what."""
    deadline = time.monotonic() + timeout_s
    while not (result := found()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.5)
    return result


def test_every_hop_of_a_request_is_in_the_store_with_its_fields(settings, store):
    client = api_client(settings, tenant="logs")
    created = client.post(f"{client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": 7}}, timeout=10)
    assert created.status_code == 202, created.text
    request_id, task_id = created.headers["X-Request-ID"], created.json()["id"]
    query = {"bool": {"should": [{"term": {"request_id": request_id}}, {"term": {"task_id": task_id}}]}}

    def every_hop():
        docs = search(store, query)
        services = {d["service"].split("-")[0] for d in docs}
        return docs if {"edge", "router", "api", "worker"} <= services else None

    docs = wait_for(f"the lines of request {request_id} from edge, router, API and worker", 60, every_hop)
    by_service = {d["service"].split("-")[0]: d for d in docs}
    edge, router, api = by_service["edge"], by_service["router"], by_service["api"]
    worker = next(d for d in docs if d["service"].startswith("worker") and d["message"] == "task succeeded")
    for doc in docs:
        assert (doc["env"], doc["host"]) == (settings.name, settings.hosts[0].name), doc
    # nginx's access lines, parsed: both proxies saw the same request under the edge's id.
    for access in (edge, router):
        assert (access["format"], access["method"], access["path"], int(access["status"])) == \
            ("access", "POST", "/v1/tasks", 202), access
        assert access["request_id"] == request_id and float(access["request_time_s"]) >= 0, access
    assert router["colour"] in ("blue", "green") and router["upstream"], router
    # The API's JSON line: its fields at the top, the whole line under "app"; colour and release from the labels.
    assert (api["format"], api["level"], api["tenant"], api["route"], api["status"], api["task_id"]) == \
        ("app", "info", "logs", "/v1/tasks", 202, task_id), api
    assert api["colour"] == router["colour"] and api["version"], api
    assert api["app"]["request_id"] == request_id and api["app"]["credential"] == "jwt", api
    assert (worker["task_id"], worker["attempt"], worker["component"]) == (task_id, 1, "taskplatform"), worker
    # The index template made the fields exact (keyword), numbers numbers, times nanoseconds.
    mapping = requests.get(f"{store}/_mapping", timeout=10).json()
    properties = next(iter(mapping.values()))["mappings"]["properties"]
    assert properties["request_id"]["type"] == "keyword" and properties["status"]["type"] == "short"
    assert properties["@timestamp"]["type"] == "date_nanos"

    # `make trace` finds them there, and the task's lines through the id the request line links.
    done = run_shipyard("trace", "--env", settings.name, "--request-id", request_id, "--since", "15m")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read from the log store (elasticsearch-1 on" in done.stdout, done.stdout
    assert '"msg": "task succeeded"' in done.stdout and f"rid={request_id}" in done.stdout, done.stdout


def test_the_audit_trail_reaches_the_store_in_order(settings, store):
    from shipyard.controller import audit_log

    engine = docker.from_env()
    started = engine.containers.get(f"{settings.compose_project}-elasticsearch-1-1").attrs["State"]["StartedAt"]
    store_up_since = dt.datetime.fromisoformat(started[:26].rstrip("Z") + "+00:00").timestamp()
    # One more event of our own: a deploy with nothing to change.
    done = run_shipyard("up", "--env", settings.name)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events, problems = audit_log.read(settings)
    assert not problems, problems
    # What was recorded since the store started (the stand-in keeps nothing older), in the file's order.
    recent = [e for e in events if e.started >= store_up_since]
    assert recent and recent[-1].command == "up" and recent[-1].result == "ok", recent[-3:]

    def stored():
        docs = search(store, {"term": {"format": "audit"}}, size=5000, sort=[{"started": "asc"}])
        return docs if {d["audit_id"] for d in docs} >= {e.id for e in recent} else None

    docs = wait_for(f"the {len(recent)} audit events recorded since the store started", 60, stored)
    # In the order the commands started (the file has them in the order they ended).
    in_store = [d["audit_id"] for d in docs if d["audit_id"] in {e.id for e in recent}]
    assert in_store == [e.id for e in sorted(recent, key=lambda e: e.started)]
    last = next(d for d in docs if d["audit_id"] == recent[-1].id)
    assert (last["command"], last["result"], last["level"], last["host"], last["user"], last["commit"]) == \
        ("up", "ok", "info", settings.hosts[0].name, recent[-1].user, recent[-1].commit), last
    assert last["audit"]["duration_s"] == recent[-1].duration_s


def test_the_store_stopped_for_a_minute_under_traffic_loses_no_line(settings, store):
    client = api_client(settings, tenant="logs-outage")
    engine = docker.from_env()
    container = engine.containers.get(f"{settings.compose_project}-elasticsearch-1-1")
    with Traffic(client, interval_s=0.1) as traffic:
        wait_for("tasks accepted before the outage", 30, lambda: len(traffic.accepted) >= 10)
        container.stop()
        before = len(traffic.accepted)
        stopped_at = time.monotonic()
        threading.Event().wait(OUTAGE_S)  # the outage itself: what is logged meanwhile must arrive later
        during = traffic.accepted[before:]
        container.start()
        assert time.monotonic() - stopped_at >= OUTAGE_S
        wait_for("tasks accepted after the store is back", 60, lambda: len(traffic.accepted) >= len(during) + before + 10)
    assert len(during) >= OUTAGE_S * 5, f"only {len(during)} tasks accepted in the outage: the traffic did not run"
    assert wait_all_processed(client, traffic.accepted)["processed"] == len(traffic.accepted)

    def missing(match: dict) -> set[str]:
        """The tasks of the outage without a line matching ``match`` in the store."""
        found = set()
        for chunk in range(0, len(during), 500):
            ids = during[chunk:chunk + 500]
            docs = search(store, {"bool": {"filter": [{"terms": {"task_id": ids}}, match]}}, size=2000)
            found |= {d["task_id"] for d in docs}
        return set(during) - found

    # The store started empty (the stand-in keeps nothing): every line of the window came from
    # the shippers' buffers once it was back.
    for what, match in (("API request", {"term": {"route": "/v1/tasks"}}),
                        ("worker success", {"match_phrase": {"message": "task succeeded"}})):
        deadline = time.monotonic() + 120
        while (lost := missing(match)) and time.monotonic() < deadline:
            time.sleep(1)
        assert not lost, (f"{len(lost)} of the {len(during)} tasks accepted during the outage have no {what} line "
                          f"in the store after 120 s, e.g. {sorted(lost)[:3]}")


@pytest.mark.after_all
def test_no_secret_value_is_in_any_stored_line(settings, store, env_name):
    """After every other test of the run (marked: tests/e2e/conftest.py runs it last): each
    secret of the environment's store, searched for as a substring of every stored document."""
    values = {name: s.value for name, s in load_or_create(REPO, env_name, generate_missing=False).items()
              if len(s.value) >= 8}
    assert values, "no secret to look for"
    scanned, after = 0, None
    while True:
        page = requests.post(f"{store}/_search", timeout=60, json={
            "size": 5000, "sort": [{"@timestamp": "asc"}, {"_id": "asc"}], "query": {"match_all": {}},
            **({"search_after": after} if after else {})}).json()["hits"]["hits"]
        if not page:
            break
        for hit in page:
            text = json.dumps(hit["_source"])
            leaked = [name for name, value in values.items() if value in text or json.dumps(value)[1:-1] in text]
            assert not leaked, f"secret(s) {leaked} in stored line {hit['_id']} of {hit['_source'].get('service')}"
        scanned += len(page)
        after = page[-1]["sort"]
    assert scanned > 1000, f"only {scanned} lines stored: the shippers did not ship the run"
