"""Task traffic for failure drills (tests/e2e and `make bench-failover`): creates tasks through
the edge of a rolled-out environment, remembers every id the API accepted, and checks that
each one is processed. Bounded: at most 2000 requests per drill, loopback only."""

from __future__ import annotations

import hashlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from shipyard import secretstore, topology
from shipyard.settings import EnvironmentSettings

REPO = Path(__file__).resolve().parents[1]


def token_for(settings: EnvironmentSettings, tenant: str, ttl_s: int = 900) -> str:
    """A token for ``tenant`` signed with the signing key of the environment's key set, as this
    checkout's secret store holds it (the services may read it from files or from Vault)."""
    if str(REPO / "services") not in sys.path:
        sys.path.insert(0, str(REPO / "services"))
    from taskplatform.auth import KeySet

    keys = KeySet.parse(secretstore.load_or_create(REPO, settings.name)["jwt_signing_key"].value)
    return keys.issue(tenant, settings.app.jwt_issuer, settings.app.jwt_audience, ttl_s)


def api_client(settings: EnvironmentSettings, tenant: str = "drill") -> requests.Session:
    """A session with a fresh token for ``tenant``, signed with the environment's own key;
    ``.base`` is the (first) edge as users reach it: plain HTTP where it serves that, else HTTPS
    checked against the environment's edge CA (its certificate names the host's address)."""
    topo = topology.build(settings)
    host = topo.instances_of("edge", "edge")[0].host
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + token_for(settings, tenant)
    if settings.edge.tls.redirects:
        from shipyard.components.edge import certificates

        bind, port = topo.published_extra(host, "edge", "edge_https")
        # One file per CA (named by its digest), not one per client: the drills make many.
        pem = secretstore.read_held(REPO, settings.name, certificates.CA_CERT).value
        ca = Path(tempfile.gettempdir()) / f"shipyard-{settings.name}-edge-ca-{hashlib.sha256(pem.encode()).hexdigest()[:16]}.pem"
        if not ca.exists() or ca.read_text() != pem:
            ca.write_text(pem)
        session.verify = str(ca)
        # Else requests takes REQUESTS_CA_BUNDLE (set on these machines) over the session's CA.
        session.trust_env = False
        scheme = "https"
    else:
        bind, port = topo.published(host, "edge")
        scheme = "http"
    if bind == "0.0.0.0":  # every address of its host: the one the inventory gives (loopback on this machine)
        bind = "127.0.0.1" if host.connect == "@local" else host.address
    session.base = f"{scheme}://{bind}:{port}"
    return session


def clear_tenant(client: requests.Session, timeout_s: float = 240) -> tuple[int, int]:
    """Delete every schedule of the client's tenant and cancel every task of it that has not
    started, then wait until none runs: what a test generated (schemathesis makes schedules that
    fire every second and `sleep` tasks of up to 30 s) must not hold the workers' slots for the
    tests after it. (schedules deleted, tasks cancelled). The run before it may have spent the
    tenant's requests for this minute: a 429 is waited out as its Retry-After says, as any
    well-behaved client does, within the deadline."""
    deadline = time.monotonic() + timeout_s
    schedules = 0
    while items := _page(client, "/v1/schedules", {}, deadline):
        for schedule in items:
            answer = _send(client, "DELETE", f"/v1/schedules/{schedule['id']}", deadline)
            schedules += answer.status_code == 204
        assert time.monotonic() < deadline, f"schedules left after {timeout_s} s"
    cancelled = 0
    for status in ("scheduled", "queued", "retry_wait"):
        while items := _page(client, "/v1/tasks", {"status": status}, deadline):
            for task in items:  # one that started meanwhile answers 409: it ends by itself
                cancelled += _send(client, "POST", f"/v1/tasks/{task['id']}/cancel", deadline).status_code == 200
            assert time.monotonic() < deadline, f"still {status} tasks after {timeout_s} s"
    while _page(client, "/v1/tasks", {"status": "running"}, deadline):
        assert time.monotonic() < deadline, f"the tenant's tasks still run after {timeout_s} s"
        time.sleep(0.5)
    return schedules, cancelled


def _send(client: requests.Session, method: str, path: str, deadline: float, **kwargs) -> requests.Response:
    """One request; a 429 is repeated after the Retry-After the API gave, until ``deadline``."""
    while True:
        answer = client.request(method, f"{client.base}{path}", timeout=10, **kwargs)
        if answer.status_code != 429:
            return answer
        wait_s = float(answer.headers.get("Retry-After", "1"))
        assert time.monotonic() + wait_s < deadline, f"{method} {path}: still rate-limited at the deadline"
        time.sleep(wait_s)


def _page(client: requests.Session, path: str, params: dict, deadline: float) -> list[dict]:
    answer = _send(client, "GET", path, deadline, params={**params, "limit": 100})
    answer.raise_for_status()
    return answer.json()["items"]


class Traffic:
    """Creates checksum tasks through the edge until stopped; remembers every accepted id, when
    each accepted request was sent and answered (``acknowledged``: (sent, answered) monotonic
    times), and the longest stretch without an accepted request (what a client sees of an outage)."""

    def __init__(self, client, interval_s: float = 0.02):
        self.client, self.accepted, self.refused = client, [], 0
        self.acknowledged: list[tuple[float, float]] = []
        self.interval_s = interval_s
        self.longest_gap_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n, last_ok = 0, time.monotonic()
        while not self._stop.is_set() and n < 2000:
            n += 1
            try:
                sent = time.monotonic()
                r = self.client.post(f"{self.client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": n}},
                                     timeout=5)
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])
                    now = time.monotonic()
                    self.acknowledged.append((sent, now))
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


class SteadyLoad:
    """Users at a steady rate through the edge, for releases: each of ``workers`` threads
    creates a task and reads it back, on a fixed schedule (``rate`` requests/s in all). Every
    answer is kept with its time, status and the ``X-Release`` that served it (colour/version);
    a connection error counts as status 0. Bounded: ``max_requests`` in all, loopback only."""

    def __init__(self, client, rate: float = 40.0, workers: int = 4, max_requests: int = 20000):
        self.client, self.rate, self.workers, self.max_requests = client, rate, workers, max_requests
        self.answers: list[tuple[float, int, str]] = []  # (monotonic time, status, X-Release)
        self.accepted: list[str] = []  # the ids of the tasks created
        self.latencies: list[tuple[float, float]] = []  # (monotonic time, seconds)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(workers)]

    def _run(self, n: int) -> None:
        # Each thread its own session: requests' sessions are not thread-safe.
        session = requests.Session()
        session.headers.update(self.client.headers)
        session.verify, session.trust_env = self.client.verify, self.client.trust_env
        interval = self.workers * 2 / self.rate  # two requests per round
        next_at = time.monotonic() + n * interval / self.workers
        while not self._stop.is_set() and len(self.answers) < self.max_requests:
            created = self._one_with(session, "POST", f"{self.client.base}/v1/tasks",
                                     json={"kind": "checksum", "payload": {"n": n, "t": time.time_ns()}})
            if created is not None and created.status_code == 202:
                self.accepted.append(created.json()["id"])
                self._one_with(session, "GET", f"{self.client.base}/v1/tasks/{created.json()['id']}")
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _one_with(self, session, method, url, **kwargs):
        started = time.monotonic()
        try:
            r = session.request(method, url, timeout=10, **kwargs)
            status, served = r.status_code, r.headers.get("X-Release", "")
        except requests.RequestException:
            r, status, served = None, 0, ""
        with self._lock:
            self.answers.append((started, status, served))
            self.latencies.append((started, time.monotonic() - started))
        return r

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def failed(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, int, str]]:
        """Answers that were not 2xx (0: no answer at all) between two monotonic times."""
        return [a for a in self.answers if since <= a[0] < until and not 200 <= a[1] < 300]

    def first_served_by(self, release: str, since: float = 0.0) -> float | None:
        """When the first request sent after ``since`` was answered by ``release`` (colour/version)."""
        times = [t for t, _, served in self.answers if t >= since and served == release]
        return min(times) if times else None
