"""Task traffic for failure drills (tests/e2e and `make bench-failover`): creates tasks through
the edge of a rolled-out environment, remembers every id the API accepted, and checks that
each one is processed. Bounded: at most 2000 requests per drill, loopback only."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import jwt
import requests

from shipyard import commands
from shipyard.apply.releasing import live_instance
from shipyard.settings import EnvironmentSettings
from shipyard.topology import published


def api_client(settings: EnvironmentSettings) -> requests.Session:
    """A session with a fresh token, signed with the environment's own key; ``.base`` is the edge."""
    bind, port = published(settings, settings.hosts[0], "edge")
    api = live_instance(settings, "api")
    key = Path(commands.project_dir(settings.deploy_root, settings.name), f"secrets/{api}/jwt_signing_key").read_text().strip()
    session = requests.Session()
    claims = {"sub": "drill", "iss": settings.app.jwt_issuer, "aud": settings.app.jwt_audience,
              "exp": int(time.time()) + 900}
    session.headers["Authorization"] = "Bearer " + jwt.encode(claims, key, algorithm="HS256")
    session.base = f"http://{bind}:{port}"
    return session


class Traffic:
    """Creates checksum tasks through the edge until stopped; remembers every accepted id and
    the longest stretch without an accepted request (what a client sees of an outage)."""

    def __init__(self, client, interval_s: float = 0.02):
        self.client, self.accepted, self.refused = client, [], 0
        self.interval_s = interval_s
        self.longest_gap_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n, last_ok = 0, time.monotonic()
        while not self._stop.is_set() and n < 2000:
            n += 1
            try:
                r = self.client.post(f"{self.client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": n}},
                                     timeout=5)
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])
                    now = time.monotonic()
                    self.longest_gap_s = max(self.longest_gap_s, now - last_ok)
                    last_ok = now
                else:
                    self.refused += 1
            except requests.RequestException:
                self.refused += 1
            time.sleep(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def wait_all_processed(client, ids, timeout=120) -> dict:
    """{"accepted": n, "processed": m}: m counts the accepted tasks that reached succeeded."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending)[:200]:
            try:
                if client.get(f"{client.base}/v1/tasks/{task_id}", timeout=5).json()["status"] == "succeeded":
                    pending.discard(task_id)
            except (requests.RequestException, ValueError, KeyError):
                pass  # the platform may still be settling after the drill
        time.sleep(0.5)
    return {"accepted": len(ids), "processed": len(ids) - len(pending)}
