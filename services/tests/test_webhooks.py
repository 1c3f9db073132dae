"""Webhooks through the real API and real workers, with a receiver this test runs on loopback
(the runtime config's ``webhook_allow_private_addresses`` on where it must reach it): signed
deliveries, retried on 500 with the same event id, redelivered by hand, sent again after the
worker sending it is killed -9, every event type; refused for loopback, private and link-local
addresses with the setting off, at creation and at delivery (after DNS: ``localhost``); a
receiver that hangs does not slow the tasks."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import live_workers, wait_worker_ready
from taskplatform import webhooks
from taskplatform_testing.servers import free_port
from test_api import assert_error

# Short enough for tests: retries after at most 0.5 s, an attempt given 3 s, a lease 1 s past it.
FAST = {"webhook_allow_private_addresses": True, "webhook_retry_base_seconds": 0.1, "webhook_retry_max_seconds": 0.5,
        "webhook_timeout_seconds": 3, "webhook_max_attempts": 4, "webhook_concurrency": 4}
WORKER_ENV = {"TASKS_WEBHOOK_POLL_SECONDS": 0.1, "TASKS_WEBHOOK_LEASE_MARGIN_SECONDS": 1}


def wait_until(condition, timeout: float, what: str):
    """``condition()``'s first truthy value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout} s (last: {value!r})")
        time.sleep(0.05)


class Receiver:
    """An HTTP server on loopback that records every POST and answers what ``respond`` says for
    it: a status, or ``"hang"`` (wait until ``release`` is set, 30 s at most)."""

    def __init__(self):
        self.received: list[dict] = []
        self.respond = lambda request: 200
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = {"path": self.path, "headers": dict(self.headers), "body": body, "at": time.time()}
                receiver.received.append(request)
                status = receiver.respond(request)
                if status == "hang":
                    receiver.release.wait(30)
                    status = 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # its sender gave up (timeout) or died

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # Polled every 0.05 s for shutdown (0.5 s by default: half a second of each test's teardown).
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}/hooks/shipyard?source=test"

    def events(self, event_type: str | None = None) -> list[dict]:
        bodies = [json.loads(r["body"]) for r in list(self.received)]
        return [b for b in bodies if event_type is None or b["type"] == event_type]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.close()


def start_worker(platform):
    port = free_port()
    worker = platform.start_worker(TASKS_WORKER_METRICS_PORT=port, **WORKER_ENV)
    worker.metrics = f"http://127.0.0.1:{port}/metrics"
    return worker


@pytest.fixture(scope="module")
def webhook_workers(platform, api_url):
    """Two workers that poll for deliveries every 0.1 s; a test that kills them starts others."""
    workers = [start_worker(platform) for _ in range(2)]
    for worker in workers:
        wait_worker_ready(worker)
    yield workers
    platform.stop_workers()


@pytest.fixture
def fast(runtime_config, webhook_workers):
    runtime_config(**FAST)
    return runtime_config


def subscribe(tenant, url: str, events=webhooks.EVENTS, **extra) -> requests.Response:
    return tenant.session.post(f"{tenant.base}/v1/webhooks", json={"url": url, "events": list(events), **extra},
                               timeout=10)


def deliveries(tenant, webhook_id: str, **params) -> dict:
    response = tenant.session.get(f"{tenant.base}/v1/webhooks/{webhook_id}/deliveries", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def verify(secret: str, request: dict, tolerance: float = 60) -> dict:
    """The receiver's check, written here from the documented scheme (not the platform's code): one
    ``t=``, and one ``v1=`` or more (one per secret still signing), any of which may match."""
    parts = [part.split("=", 1) for part in request["headers"]["Shipyard-Signature"].split(",")]
    (timestamp,) = [value for name, value in parts if name == "t"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256).hexdigest()
    assert any(hmac.compare_digest(expected, value) for name, value in parts if name == "v1"), "signature does not match"
    assert abs(time.time() - int(timestamp)) < tolerance, "stale timestamp"
    return json.loads(request["body"])


# --- subscriptions through the API ---------------------------------------------------------

def test_a_subscription_shows_its_secret_once_and_is_the_tenants_own(tenant, other_tenant, fast, receiver):
    created = subscribe(tenant, receiver.url(), ["task.succeeded", "task.dead"], description="billing")
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["events"] == ["task.dead", "task.succeeded"] and hook["description"] == "billing"
    url = f"{tenant.base}/v1/webhooks/{hook['id']}"
    read = tenant.session.get(url, timeout=10).json()
    assert read == {k: v for k, v in hook.items() if k != "secret"}
    listed = tenant.session.get(f"{tenant.base}/v1/webhooks", timeout=10).json()
    assert listed == {"items": [read], "next_cursor": None}
    assert_error(other_tenant.session.get(url, timeout=10), 404, "not_found")
    assert_error(other_tenant.session.delete(url, timeout=10), 404, "not_found")
    assert_error(other_tenant.session.get(f"{url}/deliveries", timeout=10), 404, "not_found")
    assert tenant.session.delete(url, timeout=10).status_code == 204
    assert_error(tenant.session.get(url, timeout=10), 404, "not_found")


def test_the_list_pages_newest_first(tenant, fast, receiver):
    ids = [subscribe(tenant, receiver.url() + f"&n={n}").json()["id"] for n in range(5)]
    seen, cursor = [], None
    while True:
        page = tenant.session.get(f"{tenant.base}/v1/webhooks", params={"limit": 2, **({"cursor": cursor} if cursor else {})},
                                  timeout=10).json()
        seen += [item["id"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == ids[::-1]


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.7/hook", "http://192.168.1.1/", "http://[::1]:9/", "http://[::ffff:127.0.0.1]/",
    "http://0.0.0.0:9/", "http://100.64.0.1/"])
def test_a_loopback_private_or_link_local_url_is_refused_at_creation(tenant, url):
    """With the default runtime config (private addresses not allowed): literal addresses and a
    name that resolves to loopback (``localhost``) alike."""
    response = subscribe(tenant, url)
    assert_error(response, 400, "url_not_allowed")
    assert "address" in response.json()["message"]


@pytest.mark.parametrize("url", ["ftp://example.com/", "https://user:pw@example.com/", "hooks.example.com/x",
                                 "https://example.com/#frag", "https:///nohost"])
def test_a_url_that_is_not_an_http_url_is_refused(tenant, url):
    assert_error(subscribe(tenant, url), 400, "url_not_allowed")


def test_bad_bodies_are_422(tenant):
    assert_error(subscribe(tenant, "https://example.com/", events=[]), 422, "invalid_request")
    assert_error(subscribe(tenant, "https://example.com/", events=["task.exploded"]), 422, "invalid_request")
    assert_error(tenant.session.post(f"{tenant.base}/v1/webhooks", json={"url": "https://example.com/", "events":
                                                                          ["task.dead"], "secret": "mine"}, timeout=10),
                 422, "invalid_request")


# --- deliveries ------------------------------------------------------------------------------

def test_a_delivery_is_signed_with_the_subscription_s_secret(tenant, fast, receiver):
    hook = subscribe(tenant, receiver.url()).json()
    task = tenant.create("checksum", {"n": 1}).json()
    tenant.wait_for(task["id"])
    request = wait_until(lambda: receiver.received and receiver.received[0], 10, "delivered")
    event = verify(hook["secret"], request)
    assert event["type"] == "task.succeeded" and request["headers"]["Shipyard-Event-Type"] == "task.succeeded"
    assert request["headers"]["Shipyard-Event-Id"] == event["id"]
    assert event["data"]["task"]["id"] == task["id"] and event["data"]["task"]["status"] == "succeeded"
    assert event["data"]["task"]["result"] == tenant.get(task["id"]).json()["result"]
    assert request["path"] == "/hooks/shipyard?source=test"
    assert request["headers"]["Host"] == f"localhost:{receiver.port}"
    assert request["headers"]["Content-Type"] == "application/json"
    with pytest.raises(AssertionError, match="does not match"):
        verify("whsec_another", request)
    delivered = wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["status"] == "succeeded"],
                           10, "recorded")
    assert delivered[0]["event_id"] == event["id"] and delivered[0]["task_id"] == task["id"]
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivered[0]["log"]] == [(1, 200, None)]


def test_a_receiver_answering_500_is_retried_with_the_same_event_until_it_succeeds(tenant, fast, receiver):
    receiver.respond = lambda request: 500 if len(receiver.received) <= 2 else 204
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    task = tenant.create("checksum", {"retry": True}).json()
    wait_until(lambda: len(receiver.received) >= 3, 15, "tried three times")
    bodies = {r["body"] for r in receiver.received}
    ids = {r["headers"]["Shipyard-Event-Id"] for r in receiver.received}
    assert len(bodies) == 1 and len(ids) == 1, "every attempt sends the same event"
    for request in receiver.received:
        verify(hook["secret"], request)  # each attempt signed afresh
    delivery = wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["status"] == "succeeded"],
                          10, "succeeded")[0]
    assert delivery["task_id"] == task["id"] and delivery["attempts"] == 3 and delivery["next_attempt_at"] is None
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["log"]] == [
        (3, 204, None), (2, 500, "HTTP 500"), (1, 500, "HTTP 500")]
    assert len(receiver.received) == 3, "no attempt after the success"


def test_a_delivery_that_keeps_failing_stops_after_its_attempts_and_is_redelivered_by_hand(tenant, fast, receiver):
    receiver.respond = lambda request: 503
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    tenant.create("checksum", {"give": "up"})
    failed = wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["status"] == "failed"],
                        15, "failed")[0]
    assert failed["attempts"] == FAST["webhook_max_attempts"] == len(receiver.received) == len(failed["log"])
    receiver.respond = lambda request: 200
    url = f"{tenant.base}/v1/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver"
    again = tenant.session.post(url, timeout=10)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending" and again.json()["attempts"] == 0
    wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["status"] == "succeeded"], 10,
               "redelivered")
    assert len({r["headers"]["Shipyard-Event-Id"] for r in receiver.received}) == 1
    assert len({r["body"] for r in receiver.received}) == 1
    assert_error(tenant.session.post(f"{tenant.base}/v1/webhooks/{hook['id']}/deliveries/{hook['id']}/redeliver",
                                     timeout=10), 404, "not_found")


def test_a_pending_delivery_is_not_redelivered(tenant, fast, receiver):
    receiver.respond = lambda request: "hang"
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    tenant.create("checksum", {"hang": 1})
    pending = wait_until(lambda: deliveries(tenant, hook["id"])["items"], 10, "a delivery")[0]
    url = f"{tenant.base}/v1/webhooks/{hook['id']}/deliveries/{pending['id']}/redeliver"
    assert_error(tenant.session.post(url, timeout=10), 409, "conflict")


def test_every_event_type_is_delivered_to_the_subscriptions_that_want_it(tenant, fast, receiver):
    everything = subscribe(tenant, receiver.url("127.0.0.1") + "&all=1").json()
    subscribe(tenant, receiver.url() + "&succeeded=1", ["task.succeeded"])
    failing = tenant.create("fail", {"always": True}).json()
    tenant.wait_for(failing["id"], ("dead",))
    delayed = tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": "checksum", "delay_seconds": 3600},
                                  timeout=10).json()
    assert tenant.session.post(f"{tenant.base}/v1/tasks/{delayed['id']}/cancel", timeout=10).status_code == 200
    expected = [("task.failed", failing["id"]), ("task.failed", failing["id"]), ("task.dead", failing["id"]),
                ("task.cancelled", delayed["id"])]
    got = wait_until(lambda: len(receiver.received) >= 4 and receiver.received, 15, "four events")
    assert all("all=1" in r["path"] for r in got), "the task.succeeded-only subscription got another event"
    assert sorted((e["type"], e["data"]["task"]["id"]) for e in receiver.events()) == sorted(expected)
    dead = receiver.events("task.dead")[0]["data"]["task"]
    assert dead["attempts"] == dead["max_attempts"] and "failing on purpose" in dead["error"]
    assert len({e["id"] for e in receiver.events()}) == 4
    assert len(deliveries(tenant, everything["id"])["items"]) == 4


def test_a_name_resolving_to_loopback_is_refused_at_delivery_once_private_addresses_are_off(tenant, fast, receiver):
    hook = subscribe(tenant, receiver.url("localhost"), ["task.succeeded"]).json()  # allowed now
    fast(**{**FAST, "webhook_allow_private_addresses": False})
    tenant.create("checksum", {"after": "off"})
    delivery = wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["log"]], 10,
                          "attempted")[0]
    error = delivery["log"][0]["error"]
    assert error.startswith("refused:") and "127.0.0.1" in error and "loopback" in error, error
    assert delivery["log"][0]["status_code"] is None
    assert receiver.received == []


def test_outside_the_allowed_networks_a_url_is_refused_at_creation_and_at_delivery(tenant, fast, receiver):
    """An environment that delivers only to its own receivers (ci: a fuzzer's made-up URLs must
    reach no one) lists their networks; private addresses allowed or not."""
    hook = subscribe(tenant, receiver.url("localhost"), ["task.succeeded"]).json()  # 127.0.0.1/8 allowed now
    fast(**{**FAST, "webhook_allowed_networks": ["10.0.0.0/8"]})
    refused = subscribe(tenant, receiver.url("127.0.0.1"))
    assert_error(refused, 400, "url_not_allowed")
    assert "outside the networks this environment delivers to (webhook_allowed_networks: 10.0.0.0/8)" \
        in refused.json()["message"]
    tenant.create("checksum", {"after": "narrowed"})
    delivery = wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["log"]], 10,
                          "attempted")[0]
    assert "outside the networks" in delivery["log"][0]["error"], delivery
    assert receiver.received == []


def test_a_hanging_receiver_does_not_slow_the_tasks(tenant, fast, receiver):
    """Every delivery hangs for the whole attempt's timeout (5 s) and the dispatchers' slots are
    all held; the tasks still finish at their pace without webhooks (measured first, on the same
    workers): a dispatcher in the tasks' way would hold them 5 s at least."""
    def run_tasks(n: int) -> float:
        started = time.monotonic()
        ids = [tenant.create("checksum", {"n": i}).json()["id"] for i in range(n)]
        for task_id in ids:
            tenant.wait_for(task_id, ("succeeded",), timeout=30)
        return time.monotonic() - started

    baseline = run_tasks(40)
    fast(**{**FAST, "webhook_concurrency": 2, "webhook_timeout_seconds": 5})
    receiver.respond = lambda request: "hang"
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    took = run_tasks(40)
    wait_until(lambda: len(receiver.received) >= 2, 5, "deliveries in flight")
    assert took < min(4.0, 2 * baseline + 1), f"40 tasks took {took:.2f} s with a hanging receiver, {baseline:.2f} s without"
    tenant.session.delete(f"{tenant.base}/v1/webhooks/{hook['id']}", timeout=10)  # its pending deliveries with it


def test_a_delivery_in_flight_when_its_worker_is_killed_is_sent_again_with_the_same_event_id(
        tenant, fast, receiver, platform, webhook_workers):
    """The first request hangs; every worker is killed -9 while it is in flight (so the one
    sending it is); new workers send it again once its lease expires: the receiver sees one
    event id twice, acknowledges it once, and the log records the attempt that answered."""
    receiver.respond = lambda request: "hang" if len(receiver.received) == 1 else 200
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    tasks = [tenant.create("checksum", {"kill": n}).json()["id"] for n in range(3)]
    wait_until(lambda: receiver.received, 10, "the first delivery in flight")
    for worker in live_workers(platform):
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    webhook_workers[:] = [start_worker(platform) for _ in range(2)]
    for worker in webhook_workers:
        wait_worker_ready(worker)
    for task_id in tasks:  # a task whose worker died is run again by the new ones
        tenant.wait_for(task_id, ("succeeded",), timeout=30)

    def all_succeeded():
        items = deliveries(tenant, hook["id"])["items"]
        return items if len(items) == 3 and all(d["status"] == "succeeded" for d in items) else None

    done = wait_until(all_succeeded, 20, "three deliveries succeeded")
    ids = [r["headers"]["Shipyard-Event-Id"] for r in receiver.received]
    first = ids[0]
    assert ids.count(first) == 2, f"the hung event was not sent again: {ids}"
    assert sorted(set(ids)) == sorted(d["event_id"] for d in done), "one event per task, each delivered"
    assert sorted(d["task_id"] for d in done) == sorted(tasks)
    resent = next(d for d in done if d["event_id"] == first)
    assert resent["attempts"] == 2 and [(a["attempt"], a["status_code"]) for a in resent["log"]] == [(2, 200)]


def outcome_counts(workers) -> dict[str, float]:
    """webhook_deliveries_total by outcome, summed over ``workers``' /metrics."""
    counts: dict[str, float] = {}
    for worker in workers:
        for line in requests.get(worker.metrics, timeout=5).text.splitlines():
            if line.startswith("webhook_deliveries_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                counts[outcome] = counts.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_the_workers_count_deliveries_by_outcome(tenant, fast, receiver, webhook_workers):
    before = outcome_counts(webhook_workers)
    assert set(before) == {"succeeded", "retrying", "failed"}, "every outcome exported from the start"
    receiver.respond = lambda request: 500 if len(receiver.received) == 1 else 200
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    tenant.create("checksum", {"metrics": 1})
    wait_until(lambda: [d for d in deliveries(tenant, hook["id"])["items"] if d["status"] == "succeeded"], 10,
               "succeeded")
    after = outcome_counts(webhook_workers)
    assert after["retrying"] >= before["retrying"] + 1 and after["succeeded"] >= before["succeeded"] + 1, (before, after)


# --- secret rotation ---------------------------------------------------------------------------

def signatures(request: dict) -> list[str]:
    return [part.split("=", 1)[1] for part in request["headers"]["Shipyard-Signature"].split(",")
            if part.startswith("v1=")]


def test_a_rotated_secret_still_signs_within_its_overlap_and_not_after(tenant, other_tenant, fast, receiver):
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    url = f"{tenant.base}/v1/webhooks/{hook['id']}/rotate-secret"
    assert_error(other_tenant.session.post(url, timeout=10), 404, "not_found")
    rotated = tenant.session.post(url, json={"overlap_seconds": 4}, timeout=10)
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["Cache-Control"] == "no-store"
    new = rotated.json()
    assert new["secret"].startswith("whsec_") and new["secret"] != hook["secret"] and new["id"] == hook["id"]
    assert new["previous_secret_expires_at"] is not None
    assert tenant.session.get(f"{tenant.base}/v1/webhooks/{hook['id']}", timeout=10).json()[
        "previous_secret_expires_at"] == new["previous_secret_expires_at"]

    tenant.create("checksum", {"rotated": "within"})
    within = wait_until(lambda: receiver.received and receiver.received[0], 10, "delivered")
    assert len(signatures(within)) == 2, within["headers"]["Shipyard-Signature"]
    verify(new["secret"], within)
    verify(hook["secret"], within)  # a receiver that has not switched yet still accepts

    expires = dt.datetime.fromisoformat(new["previous_secret_expires_at"])
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.5)
    assert tenant.session.get(f"{tenant.base}/v1/webhooks/{hook['id']}", timeout=10).json()[
        "previous_secret_expires_at"] is None
    tenant.create("checksum", {"rotated": "after"})
    after = wait_until(lambda: len(receiver.received) >= 2 and receiver.received[1], 10, "delivered again")
    assert len(signatures(after)) == 1
    verify(new["secret"], after)
    with pytest.raises(AssertionError, match="does not match"):
        verify(hook["secret"], after)


def test_a_second_rotation_drops_the_oldest_secret(tenant, fast, receiver):
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    url = f"{tenant.base}/v1/webhooks/{hook['id']}/rotate-secret"
    second = tenant.session.post(url, timeout=10).json()  # a day's overlap by default
    third = tenant.session.post(url, json={}, timeout=10).json()
    tenant.create("checksum", {"rotated": "twice"})
    request = wait_until(lambda: receiver.received and receiver.received[0], 10, "delivered")
    assert len(signatures(request)) == 2
    verify(third["secret"], request)
    verify(second["secret"], request)
    with pytest.raises(AssertionError, match="does not match"):
        verify(hook["secret"], request)


@pytest.mark.parametrize("body", [{"overlap_seconds": -1}, {"overlap_seconds": 604_801}, {"overlap_seconds": "60"},
                                  {"overlap": 60}])
def test_a_rotation_with_a_bad_overlap_is_422(tenant, body):
    # No subscription needed: the body is checked before the subscription is looked for.
    response = tenant.session.post(f"{tenant.base}/v1/webhooks/00000000-0000-0000-0000-000000000000/rotate-secret",
                                   json=body, timeout=10)
    assert_error(response, 422, "invalid_request")


# --- a task's callback_url ---------------------------------------------------------------------

def callback_secret(tenant, **body) -> dict:
    response = tenant.session.post(f"{tenant.base}/v1/callbacks/secret", json=body or None, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def create_with_callback(tenant, url: str, kind: str = "checksum", payload: dict | None = None, **extra):
    return tenant.session.post(f"{tenant.base}/v1/tasks", json={"kind": kind, "payload": payload or {},
                                                                "callback_url": url, **extra}, timeout=10)


def callback_deliveries(tenant) -> list[dict]:
    response = tenant.session.get(f"{tenant.base}/v1/callbacks/deliveries", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_a_callback_url_needs_the_tenants_callback_secret_and_an_allowed_address(tenant, fast, receiver):
    response = create_with_callback(tenant, receiver.url())
    assert_error(response, 409, "callback_secret_missing")
    assert "POST /v1/callbacks/secret" in response.json()["message"]
    callback_secret(tenant)
    fast(**{**FAST, "webhook_allow_private_addresses": False})
    refused = create_with_callback(tenant, receiver.url("localhost"))
    assert_error(refused, 400, "url_not_allowed")
    assert refused.json()["message"].startswith("callback_url: ") and "loopback" in refused.json()["message"]
    refused = tenant.session.post(f"{tenant.base}/v1/tasks:batch", json={"tasks": [
        {"kind": "checksum"}, {"kind": "checksum", "callback_url": "http://169.254.169.254/latest"}]}, timeout=10)
    assert_error(refused, 400, "url_not_allowed")
    assert refused.json()["message"].startswith("tasks.1.callback_url: ")
    page = tenant.session.get(f"{tenant.base}/v1/tasks", timeout=10).json()
    assert page["items"] == [], "nothing created"


def test_a_callback_is_delivered_once_per_terminal_event_and_signed_with_the_callback_secret(tenant, fast, receiver):
    secret = callback_secret(tenant)
    assert secret["secret"].startswith("whsec_") and secret["previous_secret_expires_at"] is None
    task = create_with_callback(tenant, receiver.url() + "&task=1", payload={"cb": 1})
    assert task.status_code == 202, task.text
    task = task.json()
    assert "callback_url" not in task, "the URL is not shown with the task"
    tenant.wait_for(task["id"], ("succeeded",))
    request = wait_until(lambda: receiver.received and receiver.received[0], 10, "called back")
    event = verify(secret["secret"], request)
    assert event["type"] == "task.succeeded" and event["data"]["task"]["id"] == task["id"]
    assert request["headers"]["Shipyard-Event-Id"] == event["id"] and "task=1" in request["path"]
    delivered = wait_until(lambda: [d for d in callback_deliveries(tenant) if d["status"] == "succeeded"], 10,
                           "recorded")
    assert len(delivered) == 1
    assert delivered[0]["subscription_id"] is None and delivered[0]["callback_url"] == receiver.url() + "&task=1"
    assert delivered[0]["event_id"] == event["id"] and delivered[0]["task_id"] == task["id"]
    time.sleep(1)  # the workers poll every 0.1 s: a second send of the event would be here by now
    assert len(receiver.received) == 1, "one event, one delivery"


def test_a_callback_comes_for_terminal_events_only_retried_with_the_same_event_id(tenant, fast, receiver):
    """A task that fails until dead: its retries (task.failed) are no callback, its end is; the
    receiver answers 500 once, and the retry carries the same event."""
    secret = callback_secret(tenant)
    receiver.respond = lambda request: 500 if len(receiver.received) == 1 else 200
    failing = create_with_callback(tenant, receiver.url(), "fail", {"always": True}).json()
    tenant.wait_for(failing["id"], ("dead",))
    wait_until(lambda: len(receiver.received) >= 2, 10, "tried twice")
    assert {r["headers"]["Shipyard-Event-Id"] for r in receiver.received} == {receiver.received[0]["headers"][
        "Shipyard-Event-Id"]}
    assert [verify(secret["secret"], r)["type"] for r in receiver.received] == ["task.dead", "task.dead"]
    delivery = wait_until(lambda: [d for d in callback_deliveries(tenant) if d["status"] == "succeeded"], 10,
                          "succeeded")[0]
    assert [(a["attempt"], a["status_code"]) for a in delivery["log"]] == [(2, 200), (1, 500)]
    again = tenant.session.post(f"{tenant.base}/v1/callbacks/deliveries/{delivery['id']}/redeliver", timeout=10)
    assert again.status_code == 202 and again.json()["status"] == "pending", again.text
    wait_until(lambda: len(receiver.received) >= 3, 10, "redelivered")
    assert len({r["headers"]["Shipyard-Event-Id"] for r in receiver.received}) == 1


def test_a_cancelled_tasks_callback_and_a_batchs_callbacks(tenant, other_tenant, fast, receiver):
    secret = callback_secret(tenant)
    answer = tenant.session.post(f"{tenant.base}/v1/tasks:batch", json={"tasks": [
        {"kind": "checksum", "callback_url": receiver.url() + "&n=0"},
        {"kind": "checksum"},
        {"kind": "checksum", "delay_seconds": 3600, "callback_url": receiver.url() + "&n=2"}]}, timeout=10)
    assert answer.status_code == 202, answer.text
    first, _, delayed = (item["task"] for item in answer.json()["items"])
    assert tenant.session.post(f"{tenant.base}/v1/tasks/{delayed['id']}/cancel", timeout=10).status_code == 200
    wait_until(lambda: len(receiver.received) >= 2, 15, "two callbacks")
    events = sorted((verify(secret["secret"], r)["type"], r["path"].rsplit("=", 1)[1]) for r in receiver.received)
    assert events == [("task.cancelled", "2"), ("task.succeeded", "0")]
    assert len(callback_deliveries(tenant)) == 2
    assert callback_deliveries(other_tenant) == []
    pending_id = callback_deliveries(tenant)[0]["id"]
    assert_error(other_tenant.session.post(f"{other_tenant.base}/v1/callbacks/deliveries/{pending_id}/redeliver",
                                           timeout=10), 404, "not_found")


def test_a_callback_secret_rotated_signs_with_both_during_the_overlap(tenant, fast, receiver):
    old = callback_secret(tenant)
    new = callback_secret(tenant, overlap_seconds=600)
    assert new["secret"] != old["secret"] and new["previous_secret_expires_at"] and new["created_at"] == old["created_at"]
    task = create_with_callback(tenant, receiver.url()).json()
    tenant.wait_for(task["id"], ("succeeded",))
    request = wait_until(lambda: receiver.received and receiver.received[0], 10, "called back")
    assert len(signatures(request)) == 2
    verify(new["secret"], request)
    verify(old["secret"], request)


def test_an_idempotent_create_compares_the_callback_url_too(tenant, fast, receiver):
    callback_secret(tenant)
    headers = {"Idempotency-Key": "with-callback"}
    body = {"kind": "checksum", "payload": {}, "callback_url": receiver.url()}
    first = tenant.session.post(f"{tenant.base}/v1/tasks", json=body, headers=headers, timeout=10)
    again = tenant.session.post(f"{tenant.base}/v1/tasks", json=body, headers=headers, timeout=10)
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = tenant.session.post(f"{tenant.base}/v1/tasks", json={**body, "callback_url": receiver.url() + "&x=1"},
                                headers=headers, timeout=10)
    assert_error(other, 409, "idempotency_key_reused")
    assert_error(tenant.session.post(f"{tenant.base}/v1/tasks", json={**body, "callback_url": None}, headers=headers,
                                     timeout=10), 409, "idempotency_key_reused")


# --- delivery-log retention --------------------------------------------------------------------

def test_the_workers_delete_old_finished_deliveries_and_keep_the_rest(tenant, fast, receiver, platform):
    hook = subscribe(tenant, receiver.url(), ["task.succeeded"]).json()
    for n in range(3):
        tenant.create("checksum", {"retain": n})
    # Each delivery's status is stored after the receiver answered: wait for the three stored.
    done = wait_until(lambda: len(ok := [d for d in deliveries(tenant, hook["id"])["items"]
                                         if d["status"] == "succeeded"]) == 3 and ok, 10, "three delivered and recorded")
    aged = [d["id"] for d in done[:2]]
    run_sql(platform, "UPDATE webhook_deliveries SET updated_at = clock_timestamp() - interval '2 minutes' "
                      "WHERE id = ANY($1::uuid[])", aged)
    fast(**{**FAST, "webhook_delivery_retention_seconds": 60})
    left = wait_until(lambda: (items := deliveries(tenant, hook["id"])["items"]) and len(items) == 1 and items, 10,
                      "the old ones deleted")
    assert left[0]["id"] == done[2]["id"] and left[0]["log"]
    assert run_sql(platform, "SELECT count(*) FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[])", aged) == 0


def run_sql(platform, sql: str, *args):
    """One statement on the platform's database, as its superuser; the first column of the first row."""
    import asyncio

    import asyncpg

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=platform.pg.port, database=platform.pg.database,
                                     user=platform.pg.user, password=platform.pg.password)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(main())
