"""Failure drills on the rolled-out environment: the Redis master goes away (a Sentinel
failover, then the master container stopped) while tasks are being created; every task the
API accepted is processed, and the environment converges back."""

import subprocess
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests

from shipyard import commands
from shipyard.drills.containers import container_of
from shipyard.drills.redis import sentinel_masters
from shipyard.inventory import load_environment
from shipyard.topology import publish_binding

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


@pytest.fixture(scope="module")
def client(settings):
    bind, port = publish_binding(settings, settings.hosts[0], "edge")
    key = Path(commands.project_dir(settings.deploy_root, settings.name), "secrets/api/jwt_signing_key").read_text().strip()
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + jwt.encode({"sub": "drill", "exp": int(time.time()) + 900}, key,
                                                               algorithm="HS256")
    session.base = f"http://{bind}:{port}"
    return session


class Traffic:
    """Creates checksum tasks through the edge until stopped; remembers every accepted id."""

    def __init__(self, client):
        self.client, self.accepted, self.refused = client, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self._stop.is_set() and n < 2000:
            n += 1
            try:
                r = self.client.post(f"{self.client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": n}},
                                     timeout=5)
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])
                else:
                    self.refused += 1
            except requests.RequestException:
                self.refused += 1
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def wait_all_processed(client, ids, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending)[:200]:
            if client.get(f"{client.base}/v1/tasks/{task_id}", timeout=5).json()["status"] == "succeeded":
                pending.discard(task_id)
        time.sleep(0.5)
    return {"accepted": len(ids), "processed": len(ids) - len(pending)}


def test_sentinel_failover_under_traffic_loses_no_task(env_name, settings, client):
    with Traffic(client) as traffic:
        time.sleep(1)
        result = run_shipyard("redis-failover", "--env", env_name)
        time.sleep(2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all Sentinels agree" in result.stdout
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts


def test_stopping_the_master_container_elects_a_new_master_and_loses_no_task(settings, client):
    old = sentinel_masters(settings)[0]
    old_service = old.split(":")[0]  # single host: Sentinel announces service names
    container = container_of(settings, old_service)
    with Traffic(client) as traffic:
        time.sleep(1)
        subprocess.run(["docker", "stop", container], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            masters = set(sentinel_masters(settings))
            if len(masters) == 1 and old not in masters:
                break
            time.sleep(0.2)
        time.sleep(3)  # traffic on the new master
    assert len(masters) == 1 and old not in masters, f"no new master elected: {masters}"
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    # The old master comes back as a replica of the new one; the deploy does not fight Sentinel.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        role = subprocess.run(["docker", "exec", container, "sh", "-c",
                               "REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf) "
                               "redis-cli role | head -1"], capture_output=True, text=True).stdout.strip()
        if role == "slave":
            break
        time.sleep(0.5)
    assert role == "slave"
