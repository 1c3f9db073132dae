"""The client side of `make bench-peers`, one command a process, run with the peers' venv python:

    python -m peers.driver SYSTEM COMMAND [options]     (PYTHONPATH=services/bench)

SYSTEM is ``shipyard``, ``celery``, ``arq`` or ``rq`` (the module ``peers.<SYSTEM>_peer``, whose
``Adapter`` enqueues and reads outcomes the way that system's own client does); its servers
come from the environment the bench sets (``PEER_*``, ``SHIPYARD_*``). Each command prints one
line ``PEERS_JSON {...}`` last. The measuring loops live here, once for every system: only what
the adapter does differs.

Times that cross processes (an enqueue's due time, a result's completion time as the system
stored it) are wall-clock seconds since the epoch: one host, one clock.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

POLL_S = 0.1  # how often a wait asks the system how far its tasks got
# A drain's figures come from the systems' own completion times, not from when the wait saw
# them: it asks less often, for its count (PostgreSQL counts the rows) costs the drain CPU.
DRAIN_POLL_S = 0.5

SYSTEMS = ("shipyard", "celery", "arq", "rq")


def _adapter(system: str):
    return importlib.import_module(f"peers.{system}_peer").Adapter()


def _reply(result: dict) -> None:
    print("PEERS_JSON " + json.dumps(result), flush=True)


def prepare(adapter, _args) -> dict:
    """Once, before any worker starts: what the system needs set up (Celery's result tables),
    and its settings and versions for the report."""
    return adapter.prepare()


def worker(adapter, args) -> dict:
    adapter.run_worker(args.name)
    return {}


def submit(adapter, args) -> dict:
    """One of the concurrent submitting clients: connected and ready first, then ``count``
    checksum tasks as fast as acknowledged, from the bench's GO on (stdin), so that the clients'
    start-up is not timed."""
    adapter.connect()
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return {"count": 0, "errors": 0, "started": None, "finished": None}
    errors = 0
    started = time.time()
    for index in range(args.first, args.first + args.count):
        try:
            adapter.submit(index)
        except Exception as exc:  # counted and reported: the rate counts acknowledged tasks only
            errors += 1
            if errors == 1:
                print(f"submit failed: {exc!r}", file=sys.stderr)
    return {"count": args.count - errors, "errors": errors, "started": started, "finished": time.time()}


def wait_drained(adapter, args) -> dict:
    """Until ``expected`` checksum tasks have succeeded (or ``bound`` s): how many did, and the
    first and last completion as the system stored them."""
    deadline = time.monotonic() + args.bound
    done = adapter.count_done(args.expected)
    while done < args.expected and time.monotonic() < deadline:
        time.sleep(DRAIN_POLL_S)
        done = adapter.count_done(args.expected)
    first, last = adapter.done_span()
    return {"done": done, "first_done": first, "last_done": last, "observed_at": time.time()}


def open_loop(adapter, args) -> dict:
    """``rate`` checksum tasks a second for ``seconds``, each enqueued when due whatever the
    enqueues before it took (open loop: a slow enqueue makes the next ones late, and that
    counts); then, once every task ended (or ``bound`` s), each one's latency from when it was
    due to when its result was stored."""
    adapter.connect()
    total = int(args.rate * args.seconds)
    due_at: dict[str, float] = {}
    max_lag = 0.0
    start = time.time() + 0.2  # the first one is due a moment from now, not already late
    for i in range(total):
        due = start + i / args.rate
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        max_lag = max(max_lag, time.time() - due)
        due_at[adapter.submit(args.first + i)] = due
    outcomes = _wait_ended(adapter, list(due_at), args.bound)
    latencies = sorted((o["done_at"] - due_at[task_id]) * 1000 for task_id, o in outcomes.items()
                       if o["state"] == "succeeded")
    states = Counter(o["state"] for o in outcomes.values())
    return {"sent": total, "latencies_ms": latencies, "failed": states["failed"], "pending": states["pending"],
            "max_schedule_lag_ms": max_lag * 1000}


def enqueue_slow(adapter, args) -> dict:
    adapter.connect()
    return {"ids": [adapter.submit_slow(i, args.seconds, args.marker_file) for i in range(args.count)]}


def wait_ended(adapter, args) -> dict:
    """Until every task of ``ids`` ended (or ``bound`` s): how many succeeded, failed, are still
    pending, how many ran more than once (an attempt lost with a killed worker, run again), and
    when the last one succeeded (as the system stored it)."""
    ids = json.loads(args.ids)
    outcomes = _wait_ended(adapter, ids, args.bound)
    states = Counter(o["state"] for o in outcomes.values())
    runs = [o["runs"] for o in outcomes.values() if o["runs"] is not None]
    if len(runs) < len(ids):  # the system does not count runs itself: the tasks' own marks say
        starts = Counter(line.split()[1] for line in _marks(args.marker_file) if line.startswith("start "))
        runs = list(starts.values())
    done_at = [o["done_at"] for o in outcomes.values() if o["state"] == "succeeded"]
    return {"succeeded": states["succeeded"], "failed": states["failed"], "pending": states["pending"],
            "ran_again": sum(1 for n in runs if n > 1), "last_done_at": max(done_at, default=None)}


def _marks(marker_file: str | None) -> list[str]:
    path = Path(marker_file) if marker_file else None
    return path.read_text().splitlines() if path and path.exists() else []


def _wait_ended(adapter, ids: list[str], bound: float) -> dict[str, dict]:
    deadline = time.monotonic() + bound
    while True:
        outcomes = adapter.outcomes(ids)
        if all(o["state"] != "pending" for o in outcomes.values()) or time.monotonic() >= deadline:
            return outcomes
        time.sleep(POLL_S)


COMMANDS = {"prepare": prepare, "worker": worker, "submit": submit, "wait-drained": wait_drained,
            "open-loop": open_loop, "enqueue-slow": enqueue_slow, "wait-ended": wait_ended}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--name", default="1", help="worker: its name among the system's workers")
    parser.add_argument("--first", type=int, default=0, help="submit, open-loop: the first task's index")
    parser.add_argument("--count", type=int, default=0, help="submit, enqueue-slow: how many tasks")
    parser.add_argument("--expected", type=int, default=0, help="wait-drained: the backlog")
    parser.add_argument("--bound", type=float, default=60.0, help="wait-*, open-loop: seconds to wait at most")
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop: tasks a second")
    parser.add_argument("--seconds", type=float, default=5.0, help="open-loop: for how long; enqueue-slow: each task's")
    parser.add_argument("--marker-file", help="enqueue-slow, wait-ended: where the slow tasks mark their runs")
    parser.add_argument("--ids", default="[]", help="wait-ended: the tasks, a JSON list")
    args = parser.parse_args(argv)
    _reply(COMMANDS[args.command](_adapter(args.system), args))


if __name__ == "__main__":
    main()
