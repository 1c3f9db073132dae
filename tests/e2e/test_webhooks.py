"""Webhooks end to end on the rolled-out environment, as an integrator meets them: through the
edge with the official Python client (clients/python, from this checkout), to a receiver the test
runs on the host's side of the project network (ci allows that network only:
``webhook_allowed_networks``). Each delivery is signed (checked with the client's own helper),
a 500 is retried, the worker killed mid-way loses none, and every task's event keeps one id
however often it arrives; a private address outside the allowed network is refused at create."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shipyard import commands, topology
from shipyard.controller.releases import live_instance
from shipyard.inventory import load_environment
from tests.drill_traffic import token_for

from .conftest import REPO, project_gateway

sys.path.insert(0, str(REPO / "clients" / "python"))
from shipyard_tasks import Client, InvalidRequest  # noqa: E402
from shipyard_tasks.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify  # noqa: E402

TASKS = 6


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


class Receiver:
    """Answers 500 to the first delivery of each event id and 200 to the next: every event is
    retried once. Keeps every delivery (arrival, event id, signature header, raw body, answer)."""

    def __init__(self, address: str):
        self.deliveries: list[tuple[float, str, str, bytes, int]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                event_id = self.headers.get(EVENT_ID_HEADER, "")
                with outer.lock:
                    seen = any(d[1] == event_id for d in outer.deliveries)
                    status = 200 if seen else 500
                    outer.deliveries.append((time.monotonic(), event_id, self.headers.get(SIGNATURE_HEADER, ""),
                                             body, status))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/hooks/e2e"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acknowledged(self) -> set[str]:
        with self.lock:
            return {d[1] for d in self.deliveries if d[4] == 200}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def client(settings):
    bind, port = topology.build(settings).published(settings.hosts[0], "edge")
    tenant = f"e2e-webhooks-{uuid.uuid4().hex[:8]}"
    with Client(f"http://{bind}:{port}", token_for(settings, tenant)) as api:
        yield api


def _state(container: str) -> dict:
    return json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .State}}", container],
                                     capture_output=True, text=True, check=True).stdout)


def _restarts(container: str) -> int:
    return int(subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", container],
                              capture_output=True, text=True, check=True).stdout)


def test_a_private_address_outside_the_allowed_network_is_refused_at_create(client):
    for url in ("http://192.168.77.1/hook", "http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(InvalidRequest) as refused:
            client.create_webhook(url, ["task.succeeded"])
        assert (refused.value.status, refused.value.code) == (400, "url_not_allowed"), refused.value


def test_deliveries_are_signed_retried_on_500_and_survive_a_worker_kill_one_event_id_each(settings, client):
    receiver = Receiver(project_gateway(settings, live_instance(settings, "worker")))
    try:
        hook = client.create_webhook(receiver.url, ["task.succeeded"], description="e2e receiver")
        worker = f"{settings.compose_project}-{live_instance(settings, 'worker')}-1"
        tasks = [client.create_task("checksum", {"n": n}).id for n in range(TASKS // 2)]
        # The worker killed (SIGKILL) once the first deliveries are under way: the engine restarts
        # it, and what it had not delivered is delivered by it (or another worker) afterwards.
        deadline = time.monotonic() + 60
        while not receiver.deliveries:
            assert time.monotonic() < deadline, "no delivery reached the receiver within 60 s"
            time.sleep(0.2)
        # Its process killed as a crash kills it (the engine's restart policy brings it back).
        restarts = _restarts(worker)
        subprocess.run(["kill", "-9", str(_state(worker)["Pid"])], check=True)
        tasks += [client.create_task("checksum", {"n": n}).id for n in range(TASKS // 2, TASKS)]
        deadline = time.monotonic() + 90
        while not (_restarts(worker) > restarts and _state(worker).get("Health", {}).get("Status") == "healthy"):
            assert time.monotonic() < deadline, f"{worker} did not come back healthy within 90 s: {_state(worker)}"
            time.sleep(0.5)
        for task_id in tasks:
            assert client.wait_for_task(task_id, timeout=120).status == "succeeded"
        deadline = time.monotonic() + 120
        while len(receiver.acknowledged()) < TASKS:
            assert time.monotonic() < deadline, f"{len(receiver.acknowledged())} of {TASKS} events acknowledged"
            time.sleep(0.5)
    finally:
        receiver.close()
        # `make verify` counts any restart as a loop: the worker is recreated (a new container)
        # so that the environment verifies as before.
        subprocess.run(commands.compose(commands.project_dir(settings.deploy_root, settings.name), settings.compose_project,
                                        "up", "-d", "--wait", "--force-recreate", "--no-deps",
                                        live_instance(settings, "worker")), check=True, capture_output=True)

    events: dict[str, str] = {}  # task id -> its event id
    for _, event_id, signature, body, _ in receiver.deliveries:
        event = verify(body, signature, hook.secret)  # raises unless signed with the subscription's secret
        assert event["id"] == event_id and event["type"] == "task.succeeded"
        task_id = event["data"]["task"]["id"]
        assert events.setdefault(task_id, event_id) == event_id, f"task {task_id} arrived under two event ids"
    assert sorted(events) == sorted(tasks)  # each task's event, under one id however often it came
    for event_id in events.values():  # each answered 500 first, then retried to a 200
        answers = [d[4] for d in receiver.deliveries if d[1] == event_id]
        assert answers[0] == 500 and 200 in answers, (event_id, answers)
    # The delivery log through the API says the same.
    log = {d.event_id: d for d in client.list_deliveries(hook.id, limit=100).items}
    for event_id in events.values():
        assert log[event_id].status == "succeeded" and log[event_id].attempts >= 2, log[event_id]
    duplicates = sum(1 for d in receiver.deliveries if d[4] == 200) - TASKS
    print(f"webhooks: {TASKS} events, {len(receiver.deliveries)} deliveries, {duplicates} repeated after a 200 "
          f"(at least once: the receiver drops a repeat by its event id)")
