"""`make status`: the queue as PostgreSQL has it — per queue (depth, oldest wait, running, dead)
and per kind, what waits, is scheduled, runs and died — on the row of the live colour's worker (`taskplatform
queue-stats`, run in the live API container, which holds the app role's password).

Under ``secrets.backend: vault``, each running API and worker container's Vault lease as its
credential keeper last wrote it (``lease.json`` in its state dir: services/taskplatform/db_credentials.py,
nothing secret in it): the PostgreSQL user it holds, when that lease and its token end, the
credential generation, and a WARNING when the lease is in its last quarter or ended, or the
keeper's calls to Vault are failing. Times are the host's (its engine's clock), not this machine's.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from shipyard.controller.hosts import COMPOSE_PROJECT_LABEL, COMPOSE_SERVICE_LABEL

LEASE_SERVICES = ("api", "worker")  # the processes that hold a Vault lease (vault.LOG_IN)


def queue_line(stats: dict) -> str:
    """queue-stats' JSON → one line: the totals, then every queue (a release's image declares
    them; one before queues gives none), then each kind with something in it."""
    total = stats["total"]
    line = (f"queue: {total['queued']} queued (oldest {total['oldest_queued_s']:.0f} s), "
            f"{total['scheduled']} scheduled, {total['running']} running, {total['dead']} dead")
    queues = [f"{name} {q['queued']}/{q['oldest_queued_s']:.0f}s/{q['running']}/{q['dead']}"
              for name, q in sorted(stats.get("queues", {}).items())]
    kinds = [f"{kind} {k['queued']}/{k['running']}/{k['dead']}" for kind, k in sorted(stats["kinds"].items())
             if k["queued"] or k["running"] or k["dead"]]
    return (line + (f"; per queue depth/oldest/running/dead: {', '.join(queues)}" if queues else "")
            + (f"; per kind queued/running/dead: {', '.join(kinds)}" if kinds else ""))


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%SZ", time.gmtime(at))


def lease_lines(doc: dict, now: float) -> list[str]:
    """lease.json (the keeper's state) at the host's time ``now`` → the lines `make status`
    prints under the container: what it holds, then a WARNING line per thing wrong."""
    lease_end, ttl = doc["lease_expires_at"], doc.get("lease_ttl_s") or 0
    left = lease_end - now
    token_end = doc.get("token_expires_at")
    token = ("token ends in ?" if token_end is None else
             f"token ends in {token_end - now:.0f}s (at {_clock(token_end)})" if token_end > now else
             f"token ENDED at {_clock(token_end)}")
    lease = (f"lease ends in {left:.0f}s (at {_clock(lease_end)})" if left > 0 else
             f"lease ENDED at {_clock(lease_end)}")
    lines = [f"vault: user {doc['username']}, {lease}, {token}, generation {doc['generation']}"]
    if left <= 0:
        lines.append(f"WARNING vault: the PostgreSQL lease of {doc['username']} ended {-left:.0f}s ago and no new "
                     "one came: new connections are refused, readiness fails (is Vault reachable and unsealed? "
                     "make vault-status)")
    elif ttl and left < ttl / 4:
        lines.append(f"WARNING vault: {left:.0f}s left of the lease's {ttl}s (under a quarter; the keeper renews at "
                     "half): renewals are not getting through")
    if token_end is not None and token_end <= now:
        lines.append(f"WARNING vault: the token ended {now - token_end:.0f}s ago: the keeper must log in again")
    if doc.get("failing"):
        last = doc.get("last_error") or {}
        since = f" at {_clock(last['at'])}" if last.get("at") else ""
        lines.append(f"WARNING vault: {doc['failing']} call(s) to Vault failed in a row ({doc.get('errors_total', 0)} "
                     f"since start); last: {last.get('operation', '?')}{since}: {last.get('reason', '?')}")
    return lines


def describe_lease(output: bytes, exit_code: int, now: float) -> list[str]:
    """``cat lease.json``'s answer in a container → its lines."""
    if exit_code != 0:
        return ["vault: no lease reported (no lease.json: an image from before it, or the keeper has not "
                "got its first credentials)"]
    try:
        return lease_lines(json.loads(output), now)
    except (ValueError, KeyError, TypeError):
        return ["vault: lease.json unreadable"]


def host_time(container) -> float:
    """The clock of the container's host (its engine's), which the keeper's times are on."""
    try:
        return dt.datetime.fromisoformat(container.client.info()["SystemTime"]).timestamp()
    except Exception:  # noqa: BLE001 - an engine without it: this machine's clock
        return time.time()


def _replicas(container) -> list:
    """Every running container of the same compose service (a scaled worker's replicas)."""
    labels = container.labels
    return container.client.containers.list(ignore_removed=True, filters={"label": [
        f"{COMPOSE_PROJECT_LABEL}={labels.get(COMPOSE_PROJECT_LABEL)}",
        f"{COMPOSE_SERVICE_LABEL}={labels.get(COMPOSE_SERVICE_LABEL)}"]}) or [container]


def leases(containers: dict) -> list[tuple[str, str, list[str]]]:
    """(instance, container name, its lease lines) of each running API and worker container."""
    from shipyard.components.taskplatform import LEASE_FILE

    out = []
    now = None
    for name, first in containers.items():
        if name.split("-")[0] not in LEASE_SERVICES or first.status != "running":
            continue
        now = now if now is not None else host_time(first)
        for container in _replicas(first):
            result = container.exec_run(["cat", LEASE_FILE])
            out.append((name, container.name, describe_lease(result.output, result.exit_code, now)))
    return out


def describe(settings, containers: dict) -> dict[str, str]:
    apis = {name: c for name, c in containers.items() if name.startswith("api-") and c.status == "running"}
    out: dict[str, str] = {}
    for name, container in apis.items():
        colour = name.removeprefix("api-")
        worker = f"worker-{colour}"
        if worker not in containers or containers[worker].status != "running":
            continue  # the idle colour: its workers are drained
        result = container.exec_run(["taskplatform", "queue-stats"])
        if result.exit_code != 0:
            out[worker] = "queue: no answer from PostgreSQL"
            continue
        try:
            out[worker] = queue_line(json.loads(result.output))
        except (ValueError, KeyError):
            out[worker] = "queue: unreadable answer"
    if settings.secrets.backend != "vault":
        return out
    # One text per container (the view shows a scaled worker's replicas one by one): the
    # instance's own text on its line, the lease's lines under it.
    for instance, container, lines in leases(containers):
        out[container] = "\n".join([out.get(instance, ""), *lines])
    return out
