"""`make status`: the queue as PostgreSQL has it — per queue (depth, oldest wait, running, dead)
and per kind, what waits, is scheduled, runs and died — on the row of the live colour's worker (`taskplatform
queue-stats`, run in the live API container, which holds the app role's password)."""

from __future__ import annotations

import json


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


def describe(settings, containers: dict) -> dict[str, str]:
    apis = {name: c for name, c in containers.items() if name.startswith("api-") and c.status == "running"}
    out = {}
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
    return out
