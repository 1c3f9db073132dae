"""Drain A/B: the platform's workers of two source trees, on one PostgreSQL and Redis, in the same
run (issue 23: what a change to the worker does to its drain rate, on a machine whose speed drifts).

Each round, for each tree in turn (the order alternates): ``--tasks`` ``checksum`` rows inserted
as queued and their ids XADDed to the default stream (as the API would, without it), then 2
workers of that tree (``PYTHONPATH``) started; printed: tasks a second between the first and the
last success (PostgreSQL's ``updated_at``, as ``make bench-peers`` reads it), and the CPU the
workers and PostgreSQL spent per 1,000 tasks (the workers' start-up included, ~1 s of CPU).

    git archive <commit> services | tar -x -C /tmp/before
    PYTHONPATH=services .venv/bin/python services/bench/worker_ab.py \\
        before=/tmp/before/services after=services --rounds 2

A bench prints figures: it fails only when it could not measure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg
import redis

from taskplatform import queue
from taskplatform_testing.servers import Platform, start_platform

WORKERS = 2


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and their reaped children, from /proc (0 for one gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_pids(platform: Platform) -> list[int]:
    """The postmaster and its children (the backends, the checkpointer...)."""
    master = int((platform.pg.data / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(entry.name))
        except OSError:
            continue
    return [master, *children]


def drain(platform: Platform, conn: psycopg.Connection, client: redis.Redis, tree: str, tenant: str, tasks: int,
          bound_s: float) -> str:
    ids = [row[0] for row in conn.execute(
        "INSERT INTO tasks (id, tenant, kind, payload, max_attempts, status, queued_at) "
        "SELECT gen_random_uuid(), %s, 'checksum', jsonb_build_object('n', g), 3, 'queued', clock_timestamp() "
        "FROM generate_series(1, %s) g RETURNING id", (tenant, tasks)).fetchall()]
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.xadd(queue.STREAM, {"task_id": str(task_id)})
    pipe.execute()
    pg_before = cpu_seconds(postgres_pids(platform))
    workers = [platform.start_worker(PYTHONPATH=tree) for _ in range(WORKERS)]
    try:
        deadline, done = time.monotonic() + bound_s, 0
        while time.monotonic() < deadline:
            done = conn.execute("SELECT count(*) FROM tasks WHERE tenant = %s AND status = 'succeeded'",
                                (tenant,)).fetchone()[0]
            if done == tasks:
                break
            time.sleep(0.2)
        worker_cpu = cpu_seconds([w.pid for w in workers])
        pg_cpu = cpu_seconds(postgres_pids(platform)) - pg_before
    finally:
        platform.stop_processes(chosen=workers)
    first, last = conn.execute("SELECT extract(epoch FROM min(updated_at)), extract(epoch FROM max(updated_at)) "
                               "FROM tasks WHERE tenant = %s AND status = 'succeeded'", (tenant,)).fetchone()
    if done < 2:
        return f"{done}/{tasks} done within {bound_s:.0f} s: no rate"
    rate = (done - 1) / (float(last) - float(first))
    return (f"{done}/{tasks} drained at {rate:,.0f}/s; CPU per 1,000 tasks: workers {1000 * worker_cpu / tasks * 1000:.0f} "
            f"ms, PostgreSQL {1000 * pg_cpu / tasks * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs=2, metavar="NAME=SERVICES_DIR", help="two trees' services/ directories")
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bound", type=float, default=300.0, help="seconds a drain may take")
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.trees]
    for name, tree in trees:
        if not (Path(tree) / "taskplatform" / "worker.py").is_file():
            parser.error(f"{name}={tree}: no taskplatform/worker.py there; give a tree's services/ directory")
    platform = start_platform(rate_limit_per_minute=10_000_000, worker_concurrency=16, reconcile_after_seconds=30.0)
    pg = platform.pg
    try:
        with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=pg.database,
                             autocommit=True) as conn:
            client = redis.Redis(host="127.0.0.1", port=platform.redis.port, password=platform.redis.password)
            for round_ in range(args.rounds):
                for name, tree in (trees if round_ % 2 == 0 else trees[::-1]):
                    outcome = drain(platform, conn, client, str(Path(tree).resolve()), f"ab-{name}-{round_}",
                                    args.tasks, args.bound)
                    print(f"worker-ab: round {round_ + 1} {name}: {outcome} (load average {os.getloadavg()[0]:.2f})",
                          flush=True)
    finally:
        platform.stop()


if __name__ == "__main__":
    sys.exit(main())
