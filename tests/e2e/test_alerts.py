"""An alert's whole path on the rolled-out environment: the real Prometheus scrapes the workers,
evaluates NoWorkerConsuming and sends it to the real Alertmanager, which delivers it to a webhook
receiver this test runs. Stop every worker container: the alert arrives within the bound its
settings give (discovery refresh + `for` + evaluation intervals + `group_wait`; the measured
time is printed); start them again: the resolved notification arrives.

The receiver listens on the host's side of the environment's project network (its gateway),
where the environment's ``alertmanager.webhook_urls`` points (inventories/ci.py): Alertmanager
runs in a container and cannot reach the host's loopback. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
import requests

from shipyard import topology
from shipyard.inventory import load_environment

from .conftest import REPO, project_gateway

ALERT = "NoWorkerConsuming"
SLACK_S = 10  # delivery and the engine's own latencies, beyond what the settings bound


@pytest.fixture(scope="module")
def settings(env_name):
    settings = load_environment(REPO, env_name)
    if not (settings.prometheus.enabled and settings.alertmanager.enabled):
        pytest.fail(f"{env_name}: Prometheus and Alertmanager must be enabled for this test "
                    "(SHIPYARD.prometheus.enabled, SHIPYARD.alertmanager.enabled)")
    return settings


class Receiver:
    """Alertmanager's webhook JSON, POSTed: each notification with the time it arrived."""

    def __init__(self, address: str, port: int):
        self.received: queue.Queue[tuple[float, dict]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, status: str, deadline: float, alert: str = ALERT) -> tuple[float, dict] | None:
        """The first notification of ``alert`` with ``status`` (firing/resolved) before ``deadline``."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, body = self.received.get(timeout=left)
            except queue.Empty:
                return None
            if body.get("status") == status and any(a["labels"].get("alertname") == alert for a in body["alerts"]):
                return at, body
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver(settings):
    gateway = project_gateway(settings, "alertmanager")
    urls = [urlsplit(u) for u in settings.alertmanager.webhook_urls]
    ours = [u for u in urls if u.hostname == gateway and u.port]
    if not ours:
        pytest.fail(f"{settings.name}: no alertmanager.webhook_urls entry on the project network's gateway "
                    f"{gateway} (e.g. http://{gateway}:19095/e2e-alerts, as inventories/ci.py has)")
    server = Receiver(gateway, ours[0].port)
    yield server
    server.close()


@pytest.fixture(scope="module")
def prometheus(settings):
    topo = topology.build(settings)
    prom = topo.instances_of("prometheus", "prometheus")[0]
    bind, port = topo.binding(prom)
    return f"http://{bind}:{port}/api/v1"


def _query(prometheus: str, expr: str) -> list[dict]:
    answer = requests.get(f"{prometheus}/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]["result"]


def _scraped(prometheus: str, *jobs: str) -> set[tuple[str, str]]:
    """(job, instance) of the targets Prometheus scrapes now, up (not series it still remembers)."""
    answer = requests.get(f"{prometheus}/targets", params={"state": "active"}, timeout=5)
    answer.raise_for_status()
    return {(t["labels"]["job"], t["labels"]["instance"]) for t in answer.json()["data"]["activeTargets"]
            if t["labels"]["job"] in jobs and t["health"] == "up"}


def _firing(prometheus: str, alert: str = ALERT) -> bool:
    alerts = requests.get(f"{prometheus}/alerts", timeout=5).json()["data"]["alerts"]
    return any(a["labels"]["alertname"] == alert for a in alerts)


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.5)


def _workers(settings) -> list[str]:
    """Running worker containers of every colour (each replica)."""
    found = []
    for name in topology.build(settings).instance_names("taskplatform", "worker"):  # label filters AND: one each
        found += subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={settings.compose_project}",
                                 "--filter", f"label=com.docker.compose.service={name}"],
                                capture_output=True, text=True, check=True).stdout.split()
    return found


def test_stopped_workers_page_within_the_bound_and_their_return_resolves_it(settings, receiver, prometheus, capsys):
    prom, am = settings.prometheus, settings.alertmanager
    # Before: every running worker is scraped and the alert is not firing.
    _wait(lambda: _scraped(prometheus, "worker"), 60, "a worker target up")
    _wait(lambda: not _firing(prometheus), 60, f"{ALERT} not firing")
    workers = _workers(settings)
    assert workers, "no running worker container"

    fire_bound = (prom.scrape_interval_s  # the discovery notices the name is gone
                  + 2 * prom.evaluation_interval_s + prom.alerts.no_worker_s  # pending, then `for` at an evaluation
                  + am.group_wait_s)
    resolve_bound = (prom.scrape_interval_s + 2 * prom.scrape_interval_s  # rediscovered, then scraped
                     + prom.evaluation_interval_s + am.group_interval_s)
    try:
        subprocess.run(["docker", "stop", *workers], check=True, capture_output=True, timeout=60)
        stopped = time.monotonic()
        fired = receiver.wait_for("firing", stopped + fire_bound + SLACK_S)
        with capsys.disabled():
            print(f"\n{ALERT}: {len(workers)} worker container(s) stopped; firing notification after "
                  + (f"{fired[0] - stopped:.1f} s" if fired else "nothing") + f" (bound {fire_bound} s: discovery "
                  f"{prom.scrape_interval_s} + for {prom.alerts.no_worker_s} + 2 x evaluation "
                  f"{prom.evaluation_interval_s} + group_wait {am.group_wait_s}; +{SLACK_S} s slack)")
        assert fired, f"no firing {ALERT} notification within {fire_bound + SLACK_S} s"
        body = fired[1]
        assert body["receiver"] == "page" and body["commonLabels"]["severity"] == "critical", body
        assert body["commonLabels"]["env"] == settings.name, body
        assert fired[0] - stopped <= fire_bound + SLACK_S
    finally:
        subprocess.run(["docker", "start", *workers], check=True, capture_output=True, timeout=60)
    started = time.monotonic()
    resolved = receiver.wait_for("resolved", started + 60 + resolve_bound)
    with capsys.disabled():
        print(f"{ALERT}: workers started; resolved notification after "
              + (f"{resolved[0] - started:.1f} s" if resolved else "nothing")
              + f" (includes the workers' own start; settings bound {resolve_bound} s after they answer)")
    assert resolved, f"no resolved {ALERT} notification within {60 + resolve_bound} s of the workers' start"
    assert _scraped(prometheus, "worker")


def test_a_runtime_config_every_process_rejects_fires_for_each_of_them(env_name, settings, receiver, prometheus, capsys):
    """Written straight into Consul with the management token (a push refuses it before writing):
    each API container and worker keeps its config, counts the rejection, and the alert names each."""
    from shipyard.components.consul.kv import ConsulKV
    from shipyard.components.taskplatform import runtime
    from shipyard.secretstore import load_or_create

    alert, prom, am = "RuntimeConfigRejected", settings.prometheus, settings.alertmanager
    # An earlier rejection counts for alerts.config_rejected_window_s: start once it has passed.
    _wait(lambda: not _firing(prometheus, alert), prom.alerts.config_rejected_window_s + 30, f"{alert} not firing")
    scraped = _scraped(prometheus, "api", "worker")
    assert {job for job, _ in scraped} == {"api", "worker"}, scraped
    kv = ConsulKV(settings, load_or_create(REPO, env_name, generate_missing=False)["consul_management_token"].value)
    key = runtime.runtime_key(settings.name)
    read = kv.get(key)
    good = json.loads(read.value)
    bound = prom.scrape_interval_s + 2 * prom.evaluation_interval_s + am.group_wait_s + am.group_interval_s
    kv.write(key, runtime.encode({**good, "version": str(int(good["version"]) + 1), "worker_concurrency": 0}),
             read.modify_index)
    written = time.monotonic()
    try:
        named: set[tuple[str, str]] = set()
        first = None
        while named != scraped:
            got = receiver.wait_for("firing", written + bound + SLACK_S, alert)
            if got is None:
                break
            first = first or got[0]
            named |= {(a["labels"]["job"], a["labels"]["instance"]) for a in got[1]["alerts"]
                      if a["labels"]["alertname"] == alert and a["status"] == "firing"}
        with capsys.disabled():
            print(f"\n{alert}: invalid config written; first notification after "
                  + (f"{first - written:.1f} s" if first else "nothing")
                  + f", naming {len(named)} of {len(scraped)} processes' targets (bound {bound} s: scrape "
                  f"{prom.scrape_interval_s} + 2 x evaluation {prom.evaluation_interval_s} + group_wait "
                  f"{am.group_wait_s} + group_interval {am.group_interval_s}; +{SLACK_S} s slack)")
        assert named == scraped, f"{alert} named {sorted(named)}, every API and worker target is {sorted(scraped)}"
    finally:
        fixed = kv.get(key)
        kv.write(key, runtime.encode({**good, "version": str(int(good["version"]) + 2)}), fixed.modify_index)
    # Every process takes the fixed one (the config it kept was valid all along).
    _wait(lambda: {(r["metric"]["job"], r["metric"]["instance"]) for r in _query(
        prometheus, f'config_version_info{{version="{int(good["version"]) + 2}"}}')} == scraped, 60,
        "every process applies the fixed config")


def test_tasks_waiting_behind_busy_workers_age_into_an_alert_that_resolves_once_they_run(
        env_name, settings, receiver, prometheus, capsys):
    """Each worker down to one slot (runtime config) and two more 30-second tasks than workers:
    the last ones wait, their age (each worker asks PostgreSQL every few seconds) passes the
    setting and OldestQueuedTaskTooOld reaches the receiver; once every task has been taken the
    alert resolves."""
    from shipyard.components.consul.kv import ConsulKV
    from shipyard.components.taskplatform import runtime
    from shipyard.secretstore import load_or_create
    from tests.drill_traffic import api_client

    alert, prom, am = "OldestQueuedTaskTooOld", settings.prometheus, settings.alertmanager
    _wait(lambda: _scraped(prometheus, "worker"), 60, "a worker target up")
    _wait(lambda: not _firing(prometheus, alert), 120, f"{alert} not firing")
    workers = _scraped(prometheus, "worker")
    kv = ConsulKV(settings, load_or_create(REPO, env_name, generate_missing=False)["consul_management_token"].value)
    key = runtime.runtime_key(settings.name)
    read = kv.get(key)
    good = json.loads(read.value)
    version = int(good["version"])
    kv.write(key, runtime.encode({**good, "version": str(version + 1), "worker_concurrency": 1}), read.modify_index)
    client = api_client(settings)
    try:
        _wait(lambda: {(r["metric"]["job"], r["metric"]["instance"]) for r in _query(
            prometheus, f'config_version_info{{job="worker", version="{version + 1}"}}')} == workers,
            60, "every worker applies the config with one slot")
        ids = []
        for _ in range(len(workers) + 2):
            created = client.post(f"{client.base}/v1/tasks", json={"kind": "sleep", "payload": {"seconds": 30}},
                                  timeout=10)
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        queued = time.monotonic()
        bound = (5 + prom.scrape_interval_s  # the workers' queue refresh (TASKS_QUEUE_METRICS_INTERVAL_SECONDS), a scrape
                 + prom.oldest_queued_task_max_s + prom.alerts.oldest_queued_s + 2 * prom.evaluation_interval_s
                 + am.group_wait_s)
        fired = receiver.wait_for("firing", queued + bound + SLACK_S, alert)
        with capsys.disabled():
            print(f"\n{alert}: {len(ids)} 30 s tasks for {len(workers)} one-slot worker(s); firing notification after "
                  + (f"{fired[0] - queued:.1f} s" if fired else "nothing")
                  + f" (bound {bound} s: refresh 5 + scrape {prom.scrape_interval_s} + age "
                  f"{prom.oldest_queued_task_max_s} + for {prom.alerts.oldest_queued_s} + 2 x evaluation "
                  f"{prom.evaluation_interval_s} + group_wait {am.group_wait_s}; +{SLACK_S} s slack)")
        assert fired, f"no firing {alert} notification within {bound + SLACK_S} s"
        assert fired[1]["receiver"] == "notify" and fired[1]["commonLabels"]["env"] == settings.name, fired[1]
    finally:
        now = kv.get(key)
        kv.write(key, runtime.encode({**good, "version": str(version + 2)}), now.modify_index)
    # The slots back: every task is taken at once, none waits, and the alert resolves.
    _wait(lambda: all(client.get(f"{client.base}/v1/tasks/{i}", timeout=10).json()["status"] != "queued" for i in ids),
          60, "every task taken by a worker")
    taken = time.monotonic()
    resolved = receiver.wait_for("resolved", taken + 60, alert)
    with capsys.disabled():
        print(f"{alert}: every task taken; resolved notification "
              + (f"{resolved[0] - taken:.1f} s" if resolved else "never") + " after")
    assert resolved, f"no resolved {alert} notification within 60 s of every task being taken"


def _container(settings, service: str) -> str:
    found = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={settings.compose_project}",
                            "--filter", f"label=com.docker.compose.service={service}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert found, f"no running {service} container in {settings.name}"
    return found[0]


def _primary(prometheus: str) -> str:
    nodes = [r["metric"]["node"] for r in _query(prometheus, "pg_node_in_recovery == 0")]
    assert len(nodes) == 1, f"expected one primary, the exporters say {nodes}"
    return nodes[0]


def test_a_stopped_postgres_replica_pages_and_its_return_resolves_it(settings, receiver, prometheus, capsys):
    """Stop the container of a node that is not the primary (its exporter keeps running): the
    primary's pg_stat_replication loses its row and PostgresReplicaNotStreaming fires, naming it."""
    alert, prom, am = "PostgresReplicaNotStreaming", settings.prometheus, settings.alertmanager
    nodes = [r["metric"]["node"] for r in _query(prometheus, "pg_up == 1")]
    if len(nodes) < 2:
        pytest.skip("postgres.replicas is 0: no replica to stop")
    primary = _primary(prometheus)
    replica = sorted(n for n in nodes if n != primary)[0]
    _wait(lambda: not _firing(prometheus, alert), 120, f"{alert} not firing")
    container = _container(settings, replica)
    fire_bound = (prom.scrape_interval_s  # the primary's scrape without the row
                  + 2 * prom.evaluation_interval_s + prom.alerts.replica_not_streaming_s + am.group_wait_s)
    resolve_bound = 2 * prom.scrape_interval_s + prom.evaluation_interval_s + am.group_interval_s
    try:
        subprocess.run(["docker", "stop", container], check=True, capture_output=True, timeout=60)
        stopped = time.monotonic()
        fired = receiver.wait_for("firing", stopped + fire_bound + SLACK_S, alert)
        with capsys.disabled():
            print(f"\n{alert}: {replica} stopped; firing notification after "
                  + (f"{fired[0] - stopped:.1f} s" if fired else "nothing") + f" (bound {fire_bound} s: scrape "
                  f"{prom.scrape_interval_s} + for {prom.alerts.replica_not_streaming_s} + 2 x evaluation "
                  f"{prom.evaluation_interval_s} + group_wait {am.group_wait_s}; +{SLACK_S} s slack)")
        assert fired, f"no firing {alert} notification within {fire_bound + SLACK_S} s"
        ours = [a for a in fired[1]["alerts"] if a["labels"]["alertname"] == alert]
        assert {a["labels"]["node"] for a in ours} == {replica}, ours
        assert fired[1]["receiver"] == "page" and fired[1]["commonLabels"]["env"] == settings.name, fired[1]
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True, timeout=60)
    started = time.monotonic()
    resolved = receiver.wait_for("resolved", started + 90 + resolve_bound, alert)
    with capsys.disabled():
        print(f"{alert}: {replica} started; resolved notification after "
              + (f"{resolved[0] - started:.1f} s" if resolved else "nothing")
              + f" (includes its start and catch-up; settings bound {resolve_bound} s once it streams)")
    assert resolved, f"no resolved {alert} notification within {90 + resolve_bound} s of the replica's start"
