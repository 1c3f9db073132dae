"""`make bench-api`: task API throughput and latency, end-to-end task latency, and a pgbench
single-row INSERT baseline on the same PostgreSQL, in one run. Loopback only, bounded in time.

Starts its own PostgreSQL, Redis, API (TASKS_API_PROCESSES=2) and workers; load comes from
wrk (Debian package) with a fixed connection count for a fixed duration. With --edge-url (and
--jwt-key-file of that environment) the create-task figures are measured through the edge too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jwt
import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from taskplatform_testing.servers import PG_BIN, start_platform  # noqa: E402


def wrk(url: str, token: str, seconds: int, connections: int) -> dict:
    if not shutil.which("wrk"):
        sys.exit("bench-api: wrk is not installed (apt-get install wrk)")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
                          "-s", str(HERE / "create_task.lua"), url],
                         env=dict(os.environ, BENCH_TOKEN=token), capture_output=True, text=True,
                         timeout=seconds + 60)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        sys.exit(f"bench-api: wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line.split(" ", 1)[1])
    result["rps"] = result["requests"] / result["duration_s"]
    return result


def pgbench_insert_tps(platform, seconds: int) -> float:
    dsn = dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
               password=platform.pg.password)
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_baseline")
        conn.execute("CREATE TABLE bench_baseline (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tenant text, "
                     "payload jsonb, created_at timestamptz DEFAULT clock_timestamp())")
    script = platform.root / "insert.sql"
    script.write_text("INSERT INTO bench_baseline (tenant, payload) VALUES ('bench', '{\"n\": 1}');\n")
    pgbench = str(PG_BIN / "pgbench") if (PG_BIN / "pgbench").exists() else "pgbench"
    out = subprocess.run([pgbench, "-n", "-h", "127.0.0.1", "-p", str(platform.pg.port), "-U", platform.pg.user,
                          "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(script), platform.pg.database],
                         env=dict(os.environ, PGPASSWORD=platform.pg.password), capture_output=True, text=True,
                         timeout=seconds + 60)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if not match:
        sys.exit(f"bench-api: pgbench printed no tps:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def end_to_end_latency(platform, url: str, token: str, count: int) -> dict:
    """created → succeeded, from the rows' own timestamps (server clock, no polling skew)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    ids = []
    for i in range(count):
        ids.append(session.post(f"{url}/v1/tasks", json={"kind": "checksum", "payload": {"e2e": i}}, timeout=10).json()["id"])
        time.sleep(0.005)  # a steady trickle, not a burst: latency, not backlog
    dsn = dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
               password=platform.pg.password)
    deadline = time.monotonic() + 60
    with psycopg.connect(**dsn) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT extract(epoch FROM updated_at - created_at) * 1000 FROM tasks "
                                "WHERE id = ANY(%s::uuid[]) AND status = 'succeeded'", (ids,)).fetchall()
            conn.commit()
            if len(rows) == count:
                break
            time.sleep(0.2)
    latencies = sorted(float(r[0]) for r in rows)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    return {"tasks": count, "done": len(latencies), "p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99)}


def drain_backlog(platform, limit_s: float = 180) -> dict:
    dsn = dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
               password=platform.pg.password)
    started = time.monotonic()
    with psycopg.connect(**dsn, autocommit=True) as conn:
        backlog = conn.execute("SELECT count(*) FROM tasks WHERE status <> 'succeeded'").fetchone()[0]
        left = backlog
        while left and time.monotonic() - started < limit_s:
            time.sleep(0.5)
            left = conn.execute("SELECT count(*) FROM tasks WHERE status <> 'succeeded'").fetchone()[0]
    took = time.monotonic() - started
    return {"backlog": backlog, "left": left, "seconds": took, "tasks_per_s": (backlog - left) / took if took else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--e2e-tasks", type=int, default=200)
    parser.add_argument("--edge-url", help="also measure create-task through this edge (e.g. http://127.0.0.1:18080)")
    parser.add_argument("--jwt-key-file", help="the edge environment's JWT signing key file")
    args = parser.parse_args()

    platform = start_platform(rate_limit_per_minute=10_000_000, worker_concurrency=16, reconcile_after_seconds=30.0)
    try:
        token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, platform.jwt_key, algorithm="HS256")
        url = platform.start_api(processes=2)
        wrk(url, token, 2, args.connections)  # warm-up: pools filled, code paths hot
        direct = wrk(url, token, args.seconds, args.connections)
        edge = None
        if args.edge_url:
            key = Path(args.jwt_key_file).read_text().strip() if args.jwt_key_file else platform.jwt_key
            edge_token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, key, algorithm="HS256")
            edge = wrk(args.edge_url, edge_token, args.seconds, args.connections)
        for _ in range(2):
            platform.start_worker(TASKS_WORKER_METRICS_PORT="0")
        # Drain the backlog the load phase left (worker throughput), then measure latency idle.
        drain = drain_backlog(platform)
        e2e = end_to_end_latency(platform, url, token, args.e2e_tasks)
        platform.stop_workers()
        baseline = pgbench_insert_tps(platform, args.seconds)
    finally:
        platform.stop()

    ratio = direct["rps"] / baseline
    print(f"bench-api ({args.connections} connections, {args.seconds}s per phase, API 2 processes, loopback)")
    print(f"  create-task direct   {direct['rps']:8.0f} req/s  p50 {direct['p50_ms']:6.1f} ms  p95 {direct['p95_ms']:6.1f} ms"
          f"  p99 {direct['p99_ms']:6.1f} ms  errors {direct['errors']}  non-2xx {direct['non2xx']}")
    if edge:
        print(f"  create-task via edge {edge['rps']:8.0f} req/s  p50 {edge['p50_ms']:6.1f} ms  p95 {edge['p95_ms']:6.1f} ms"
              f"  p99 {edge['p99_ms']:6.1f} ms  errors {edge['errors']}  non-2xx {edge['non2xx']}")
    print(f"  worker drain         {drain['tasks_per_s']:8.0f} tasks/s  ({drain['backlog']} queued tasks, "
          f"{drain['left']} left, 2 workers)")
    print(f"  end-to-end (created -> succeeded, {e2e['done']}/{e2e['tasks']} tasks)  p50 {e2e['p50_ms']:.1f} ms"
          f"  p95 {e2e['p95_ms']:.1f} ms  p99 {e2e['p99_ms']:.1f} ms")
    print(f"  pgbench single-row INSERT baseline  {baseline:8.0f} tps (8 clients)")
    print(f"  ratio create-task/s : pgbench insert tps = {ratio:.2f}")
    target = direct["rps"] >= 1000 and direct["p95_ms"] < 50
    print(f"  target >= 1000 create-task/s at p95 < 50 ms: {'MET' if target else 'MISSED'}")
    print("BENCH_JSON " + json.dumps({"direct": direct, "edge": edge, "e2e": e2e, "drain": drain, "pgbench_insert_tps": baseline,
                                      "ratio_to_pgbench": ratio}))


if __name__ == "__main__":
    main()
