"""Integration fixtures: a real PostgreSQL and Redis for the session, the real API process,
and helpers to act as a tenant. Tests use a fresh tenant each, so they do not see each other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from taskplatform_testing.consul_server import Consul
from taskplatform_testing.servers import Platform, start_platform, write_config

SERVER_ERRORS = range(500, 600)


def sign_hs256(key: str, payload: dict, header: dict) -> str:
    """A JWT signed with HS256 over any JSON header and payload — also those PyJWT would not
    make (a lone surrogate, a number as subject or kid)."""
    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing_input = b64(json.dumps(header).encode()) + b"." + b64(json.dumps(payload).encode())  # \ud800 escaped
    return (signing_input + b"." + b64(hmac.new(key.encode(), signing_input, hashlib.sha256).digest())).decode()


@pytest.fixture(scope="session")
def platform() -> Platform:
    started = start_platform()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def api_url(platform) -> str:
    return platform.start_api(processes=2)


class Tenant:
    def __init__(self, base: str, platform: Platform, name: str | None = None):
        self.base = base
        self.name = name or f"tenant-{uuid.uuid4().hex[:8]}"
        token = platform.token(self.name)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def create(self, kind: str = "checksum", payload: dict | None = None, key: str | None = None):
        headers = {"Idempotency-Key": key} if key else {}
        return self.session.post(f"{self.base}/v1/tasks", json={"kind": kind, "payload": payload or {}},
                                 headers=headers, timeout=10)

    def get(self, task_id: str):
        return self.session.get(f"{self.base}/v1/tasks/{task_id}", timeout=10)

    def wait_for(self, task_id: str, statuses=("succeeded", "dead", "cancelled"), timeout: float = 30) -> dict:
        return self.wait_until(task_id, lambda task: task["status"] in statuses, timeout, f"status in {statuses}")

    def wait_until(self, task_id: str, condition, timeout: float = 30, what: str = "the condition") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.get(task_id).json()
            if condition(task):
                return task
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} not at {what} after {timeout}s: {task}")


@pytest.fixture
def tenant(api_url, platform) -> Tenant:
    return Tenant(api_url, platform)


@pytest.fixture
def other_tenant(api_url, platform) -> Tenant:
    return Tenant(api_url, platform)


def applied_versions(api_url: str) -> dict[str, str]:
    """pid → the runtime config version each API process behind ``api_url`` applies, from its
    ``config_version_info`` series (one per process; a process that has exited is left out: its
    series stays in the multiprocess directory)."""
    applied = {}
    for family in text_string_to_metric_families(requests.get(f"{api_url}/metrics", timeout=5).text):
        for sample in family.samples if family.name == "config_version_info" else ():
            pid = sample.labels["pid"]
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                continue
            applied[pid] = sample.labels["version"]
    return applied


def wait_config_version(api_url: str, version: str, timeout: float = 10) -> None:
    """Every API process must have applied it: each one's series names it, and /v1/config says so.
    (Asking /v1/config ten times in a row, as before, took half a second of sleeps per call and
    still only hoped the requests spread over the processes.)"""
    deadline = time.monotonic() + timeout
    while True:
        applied = applied_versions(api_url)
        if applied and set(applied.values()) == {version} \
                and requests.get(f"{api_url}/v1/config", timeout=5).json()["version"] == version:
            return
        assert time.monotonic() < deadline, f"config version {version} not applied within {timeout}s: {applied}"
        time.sleep(0.05)


def log_lines(platform, process: str) -> list[dict]:
    """Every JSON line the platform's ``process`` processes (api, worker) have logged so far."""
    lines = []
    for path in sorted(platform.root.glob(f"{process}-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def heartbeat(worker) -> dict | None:
    """What a worker's heartbeat file says (None before its first maintenance pass)."""
    try:
        with open(worker.heartbeat) as beat:
            return json.load(beat)
    except FileNotFoundError:
        return None


def wait_worker_ready(worker, timeout: float = 30) -> None:
    """A worker writes its first heartbeat once its consumer group is there and its loops run."""
    deadline = time.monotonic() + timeout
    while heartbeat(worker) is None:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
        assert time.monotonic() < deadline, f"worker not ready after {timeout}s"
        time.sleep(0.05)


def live_workers(platform) -> list:
    return [p for p in platform.processes if p.args[-1] == "worker" and p.poll() is None]


def wait_workers_config_version(workers, version: str, timeout: float = 10) -> None:
    """Each worker must have applied it (its heartbeat names the config its loops now read)."""
    deadline = time.monotonic() + timeout
    while True:
        behind = [w.pid for w in workers if (heartbeat(w) or {}).get("config_version") != version]
        if not behind:
            return
        assert time.monotonic() < deadline, f"workers {behind} have not applied config {version} in {timeout}s"
        time.sleep(0.05)


@pytest.fixture
def runtime_config(platform, api_url):
    """Change the runtime config for one test, applied by the API processes and every running
    worker when it returns; the defaults come back afterwards."""
    counter = {"n": 0}

    def apply(**overrides) -> str:
        counter["n"] += 1
        version = f"test-{uuid.uuid4().hex[:6]}"
        write_config(platform.config_file, version=version, **overrides)
        wait_config_version(api_url, version)
        wait_workers_config_version(live_workers(platform), version)
        return version

    yield apply
    if counter["n"]:
        write_config(platform.config_file)
        wait_config_version(api_url, "1")
        wait_workers_config_version(live_workers(platform), "1")


@pytest.fixture(scope="session")
def consul_server(tmp_path_factory):
    """A real Consul (ACLs on, default deny), shared by the runtime-config tests."""
    server = Consul(tmp_path_factory.mktemp("consul")).start()
    yield server
    server.stop()


@pytest.fixture
def start_api(platform):
    """Start an API process of its own (TASKS_* overrides as keywords) for one test: returns
    the process (``.url``, ``.log_path``); stopped when the test ends."""
    started = []

    def start(processes: int = 1, **env):
        proc = platform.spawn_api(processes, **env)
        started.append(proc)
        return proc

    yield start
    platform.stop_processes(chosen=started)


# Under pytest-xdist (make test-services: `-n 2 --dist loadfile --no-loadscope-reorder`) each file
# goes whole to one worker, in collection order, the next to whichever is free. These take the
# longest (~40-65 s each, mostly waiting on timetables, leases and schemathesis' time budget):
# handed out first, the short files fill in around them instead of one arriving last and running
# alone. The retention load test first, beside test_faults (whose time is spent waiting on
# leases and sleeping tasks): its table's size depends on autovacuum keeping pace, which a busy
# neighbour such as schemathesis can delay. A run without xdist keeps the collection order.
LONGEST_FIRST = ("test_retention_load.py", "test_faults.py", "test_api_openapi.py", "test_queues.py",
                 "test_webhooks.py")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest in order
