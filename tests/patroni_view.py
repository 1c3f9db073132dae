"""How the Patroni drills (tests/e2e/test_patroni_*.py, `make bench-failover`) see a rolled-out cluster: Patroni's own
view through each node's REST API (inside its container: the API is published nowhere), and
PostgreSQL's own answer to "do you take writes?"."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from shipyard.components.postgres import patroni
from shipyard.controller.drills import container_of

_CLUSTER = ("import json, urllib.request; "
            f"print(json.dumps(json.load(urllib.request.urlopen('http://127.0.0.1:{patroni.API_PORT}/cluster', timeout=2))))")


def cluster_seen_by(settings, node: str) -> dict | None:
    """Patroni's /cluster as ``node`` answers it (None when it does not)."""
    try:
        container = container_of(settings, node)
    except Exception:  # not running
        return None
    result = subprocess.run(["docker", "exec", container, "python3", "-c", _CLUSTER], capture_output=True, text=True,
                            timeout=10)
    return json.loads(result.stdout) if result.returncode == 0 else None


def leader_of(cluster: dict | None) -> str | None:
    for member in (cluster or {}).get("members", []):
        if member.get("role") in ("leader", "master", "primary") and member.get("state") == "running":
            return member["name"]
    return None


def healthy_cluster(settings, nodes) -> dict | None:
    """The cluster when every node is a running member with one leader, on one timeline, and in
    synchronous mode a replica designated the synchronous standby: only that one may take over
    (Patroni refuses to promote another, which could lack acknowledged commits), and it is
    named a loop or two after a replica (re)joins — a drill that kills the leader before then
    finds no leader elected at all (seen in make test, right after the partition drill)."""
    wants_sync = settings.postgres.patroni.synchronous and len(nodes) > 1
    for node in nodes:
        cluster = cluster_seen_by(settings, node)
        members = {m["name"]: m for m in (cluster or {}).get("members", [])}
        if sorted(members) != sorted(nodes) or not leader_of(cluster):
            continue
        if wants_sync and not any(m.get("role") == "sync_standby" for m in members.values()):
            continue
        if all(m["state"] in ("running", "streaming") for m in members.values()) and \
                len({m.get("timeline") for m in members.values()}) == 1:
            return cluster
    return None


_AS_REPLICATOR = "host=127.0.0.1 user=replicator dbname=postgres passfile=/run/secrets/replication_pgpass connect_timeout=2"


def takes_writes(settings, node: str) -> bool | None:
    """PostgreSQL's own answer on ``node``, asked inside its container over its loopback (so a
    node cut off from the network still answers): True for a primary, False in recovery, None
    when it does not answer (stopped, restarting)."""
    try:
        container = container_of(settings, node)
    except Exception:
        return None
    try:
        result = subprocess.run(["docker", "exec", container, "psql", _AS_REPLICATOR, "-qtAX", "-c",
                                 "SELECT pg_is_in_recovery()"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    answer = result.stdout.strip()
    return {"f": True, "t": False}.get(answer) if result.returncode == 0 else None


def writable_nodes(settings, nodes) -> set[str]:
    """The nodes that take writes, every node asked at the same moment (one thread each)."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        answers = dict(zip(nodes, pool.map(lambda n: takes_writes(settings, n), nodes)))
    return {node for node, writable in answers.items() if writable}


class WritableWatch:
    """Samples which nodes take writes, over and over, until stopped: ``samples`` is a list of
    (monotonic time, set of writable nodes). Two nodes in one sample is a split brain."""

    def __init__(self, settings, nodes):
        self.settings, self.nodes = settings, list(nodes)
        self.samples: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), writable_nodes(self.settings, self.nodes)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def split_brains(self) -> list[tuple[float, set[str]]]:
        return [(at, nodes) for at, nodes in self.samples if len(nodes) > 1]

    def writable_between(self, since: float, until: float) -> list[set[str]]:
        return [nodes for at, nodes in self.samples if since <= at <= until]


def lost_within_bound(traffic, counts: dict, at: float, synchronous: bool) -> None:
    """Synchronous mode: nothing acknowledged is lost. Asynchronous: only what the leader had not
    sent when it was cut off, never more than it acknowledged in the second before."""
    lost = counts["accepted"] - counts["processed"]
    if synchronous:
        assert lost == 0, f"{lost} acknowledged tasks missing under synchronous mode: {counts}"
    else:
        assert lost <= sum(1 for _, answered in traffic.acknowledged if at - 1 <= answered <= at), counts
