"""`make bench-api`: task API throughput and latency, overload (4x the sustainable rate:
refused fast, accepted ones still fast, memory bounded, every accepted task completed),
end-to-end task latency, and a pgbench single-row INSERT baseline on the same PostgreSQL, in
one run. Loopback only, bounded in time.

Starts its own PostgreSQL, Redis, API (TASKS_API_PROCESSES=2) and workers; load comes from
wrk (Debian package) with a fixed connection count for a fixed duration (paced in the overload
phase, where a prober also times single requests to split refusals from acceptances). With
--edge-url (and --jwt-key-file of that environment) the create-task figures are measured
through the edge too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from taskplatform_testing.servers import PG_BIN, start_platform, token_for  # noqa: E402

OVERLOAD_FACTOR = 4
OVERLOAD_CONNECTIONS = 512
PROBE_THREADS, PROBE_INTERVAL_S = 4, 0.04  # ~100 timed requests/s alongside wrk's load


def wrk(url: str, token: str, seconds: int, connections: int, delay_ms: int = 0) -> dict:
    if not shutil.which("wrk"):
        sys.exit("bench-api: wrk is not installed (apt-get install wrk)")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
                          "-s", str(HERE / "create_task.lua"), url],
                         env=dict(os.environ, BENCH_TOKEN=token, BENCH_DELAY_MS=str(delay_ms)), capture_output=True,
                         text=True, timeout=seconds + 60)
    line = next((l for l in out.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if line is None:
        sys.exit(f"bench-api: wrk printed no result:\n{out.stdout}\n{out.stderr}")
    result = json.loads(line.split(" ", 1)[1])
    result["rps"] = result["requests"] / result["duration_s"]
    return result


def dsn(platform) -> dict:
    return dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
                password=platform.pg.password)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def group_rss_mb(pid: int) -> float:
    """Resident memory of a process group (the uvicorn master and its worker processes)."""
    total_kb = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:  # pgrp
                status = (stat.parent / "status").read_text()
                total_kb += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
        except (OSError, AttributeError, IndexError):
            continue  # a process that ended meanwhile
    return total_kb / 1024


class Prober:
    """Times single creates while wrk loads the API: wrk's latency histogram mixes refusals
    and acceptances, these samples are split by status."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(PROBE_THREADS)]

    def _run(self, index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        n = 0
        while not self._stop.is_set():
            n += 1
            started = time.perf_counter()
            try:
                status = session.post(f"{self.url}/v1/tasks", json={"kind": "checksum", "payload": {"probe": [index, n]}},
                                      timeout=10).status_code
            except requests.RequestException:
                status = 0
            took = time.perf_counter() - started
            self.samples.append((status, took * 1000))
            time.sleep(max(0.0, PROBE_INTERVAL_S - took))

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def latencies(self, status: int) -> list[float]:
        return [ms for s, ms in self.samples if s == status]


def overload(platform, api, url: str, sustainable_rps: float, seconds: int) -> dict:
    """OVERLOAD_FACTOR x the sustainable rate, paced over many connections, for ``seconds``."""
    token = platform.token("bench-overload")
    rate = OVERLOAD_FACTOR * sustainable_rps
    delay_ms = max(1, round(OVERLOAD_CONNECTIONS * 1000 / rate))
    rss_before = group_rss_mb(api.pid)
    with Prober(url, token) as prober:
        load = wrk(url, token, seconds, OVERLOAD_CONNECTIONS, delay_ms)
    rss_after = group_rss_mb(api.pid)
    refused, accepted = prober.latencies(503), prober.latencies(202)
    others = len(prober.samples) - len(refused) - len(accepted)
    return {"target_rps": rate, "offered_rps": load["rps"], "wrk": load, "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "probes": len(prober.samples), "probe_others": others,
            "probe_accepted": len(accepted), "probe_refused": len(refused),
            "refused_p50_ms": percentile(refused, 0.5), "refused_p99_ms": percentile(refused, 0.99),
            "accepted_p50_ms": percentile(accepted, 0.5), "accepted_p95_ms": percentile(accepted, 0.95),
            "accepted_total": load["accepted"] + len(accepted)}


def overload_tasks(platform) -> dict:
    """Every task the overload phase got accepted (wrk's and the prober's), and how they ended."""
    with psycopg.connect(**dsn(platform)) as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM tasks WHERE tenant = 'bench-overload' "
                                 "GROUP BY status").fetchall())
    return {"rows": sum(rows.values()), "succeeded": rows.get("succeeded", 0)}


def pgbench_insert_tps(platform, seconds: int) -> float:
    with psycopg.connect(**dsn(platform), autocommit=True) as conn:
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
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    ids = []
    for i in range(count):
        ids.append(session.post(f"{url}/v1/tasks", json={"kind": "checksum", "payload": {"e2e": i}}, timeout=10).json()["id"])
        time.sleep(0.005)  # a steady trickle, not a burst: latency, not backlog
    deadline = time.monotonic() + 60
    with psycopg.connect(**dsn(platform)) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute("SELECT extract(epoch FROM updated_at - created_at) * 1000 FROM tasks "
                                "WHERE id = ANY(%s::uuid[]) AND status = 'succeeded'", (ids,)).fetchall()
            conn.commit()
            if len(rows) == count:
                break
            time.sleep(0.2)
    latencies = [float(r[0]) for r in rows]
    return {"tasks": count, "done": len(latencies), "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99)}


def drain_backlog(platform, limit_s: float = 180) -> dict:
    started = time.monotonic()
    with psycopg.connect(**dsn(platform), autocommit=True) as conn:
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
        token = platform.token("bench")
        api = platform.spawn_api(processes=2)
        url = api.url
        wrk(url, token, 2, args.connections)  # warm-up: pools filled, code paths hot
        direct = wrk(url, token, args.seconds, args.connections)
        edge = None
        if args.edge_url:
            edge_token = token_for(Path(args.jwt_key_file), "bench") if args.jwt_key_file else token
            edge = wrk(args.edge_url, edge_token, args.seconds, args.connections)
        over = overload(platform, api, url, direct["rps"], args.seconds)
        for _ in range(2):
            platform.start_worker(TASKS_WORKER_METRICS_PORT="0")
        # Drain the backlog the load phases left (worker throughput), then measure latency idle.
        drain = drain_backlog(platform)
        over_tasks = overload_tasks(platform)
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
    w = over["wrk"]
    print(f"  overload ({OVERLOAD_FACTOR}x = {over['target_rps']:.0f} req/s target over {OVERLOAD_CONNECTIONS} connections, "
          f"{args.seconds}s): offered {over['offered_rps']:.0f} req/s, {w['accepted']} accepted (202), "
          f"{w['refused']} refused (503), errors {w['errors']}, all-status p99 {w['p99_ms']:.1f} ms")
    print(f"    probes {over['probes']} ({over['probe_others']} neither 202 nor 503): refused p50 "
          f"{over['refused_p50_ms']:.1f} ms  p99 {over['refused_p99_ms']:.1f} ms;  accepted p50 "
          f"{over['accepted_p50_ms']:.1f} ms  p95 {over['accepted_p95_ms']:.1f} ms")
    print(f"    API RSS (2 processes + master) {over['rss_before_mb']:.0f} MB before, {over['rss_after_mb']:.0f} MB after")
    print(f"    accepted tasks: {over_tasks['rows']} rows ({over['accepted_total']} 202s counted), "
          f"{over_tasks['succeeded']} succeeded")
    print(f"  worker drain         {drain['tasks_per_s']:8.0f} tasks/s  ({drain['backlog']} queued tasks, "
          f"{drain['left']} left, 2 workers)")
    print(f"  end-to-end (created -> succeeded, {e2e['done']}/{e2e['tasks']} tasks)  p50 {e2e['p50_ms']:.1f} ms"
          f"  p95 {e2e['p95_ms']:.1f} ms  p99 {e2e['p99_ms']:.1f} ms")
    print(f"  pgbench single-row INSERT baseline  {baseline:8.0f} tps (8 clients)")
    print(f"  ratio create-task/s : pgbench insert tps = {ratio:.2f}")
    target = direct["rps"] >= 1000 and direct["p95_ms"] < 50
    print(f"  target >= 1000 create-task/s at p95 < 50 ms: {'MET' if target else 'MISSED'}")
    overload_target = (over["refused_p99_ms"] < 50 and over["accepted_p95_ms"] < 100 and over["probe_others"] == 0
                       and w["errors"] == 0 and over_tasks["succeeded"] == over_tasks["rows"] >= over["accepted_total"])
    print(f"  overload target refused p99 < 50 ms, accepted p95 < 100 ms, no other answer, every accepted task "
          f"succeeded: {'MET' if overload_target else 'MISSED'}")
    print("BENCH_JSON " + json.dumps({"direct": direct, "edge": edge, "overload": over, "overload_tasks": over_tasks,
                                      "e2e": e2e, "drain": drain, "pgbench_insert_tps": baseline,
                                      "ratio_to_pgbench": ratio}))


if __name__ == "__main__":
    main()
