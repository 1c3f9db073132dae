"""`make bench-api`: task API throughput and latency, overload (4x the sustainable rate:
refused fast, accepted ones still fast, memory bounded, every accepted task completed),
end-to-end task latency, and a pgbench single-row INSERT baseline on the same PostgreSQL, in
one run. Loopback only, bounded in time.

Starts its own PostgreSQL, Redis, API (TASKS_API_PROCESSES=2) and workers. The sustainable rate
comes from wrk (Debian package): a fixed connection count for a fixed duration. The overload is
open loop (``openloop.py``): 4x that rate on a fixed schedule, each request timed from when it
was due, so queueing anywhere (the API, the kernel, the generator's own connections) counts.
The generator runs at a raised priority (nice -10): it stands for clients on other machines, and
on this one its own wait for a CPU would be counted as the API's latency; it still takes its CPU
from the API's, and the figures say how much. With --edge-url (and --jwt-key-file of that
environment) the create-task figures are measured through the edge too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))  # the repository: on_vault bootstraps Vault with shipyard's own code

import observed  # noqa: E402  (services/bench/observed.py)
import on_vault  # noqa: E402  (services/bench/on_vault.py)
from taskplatform_testing.servers import PG_BIN, free_port, start_platform, token_for  # noqa: E402

OVERLOAD_FACTOR = 4
GENERATOR_NICE = -10


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


def _settled(result: dict) -> dict:
    """``result``, once wrk's last requests have been answered (it leaves without waiting for
    them; with the next run's connections they would pass the concurrency limit)."""
    time.sleep(1)
    return result


def dsn(platform) -> dict:
    return dict(host="127.0.0.1", port=platform.pg.port, user=platform.pg.user, dbname=platform.pg.database,
                password=platform.pg.password)


def ms(value: float | None) -> str:
    return f"{value:6.1f} ms" if value is not None else "     - ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _stat(pid: int | str) -> list[int] | None:
    """The numeric fields of /proc/<pid>/stat after the command: [1] ppid, [2] pgrp, [11] utime,
    [12] stime, [16] nice (man 5 proc numbers them from 1 with pid and command first)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # a process that ended meanwhile
    return [int(v) if v.lstrip("-").isdigit() else 0 for v in fields]


def _pids_where(index: int, value: int) -> list[int]:
    return [int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and (stat := _stat(d.name)) is not None and stat[index] == value]


def group_pids(pgrp: int) -> list[int]:
    """The processes of a process group (uvicorn's master, its worker processes and helpers)."""
    return _pids_where(2, pgrp)


def children_and_self(pid: int) -> list[int]:
    return [pid] + _pids_where(1, pid)


def memory_mb(pids: list[int], field: str) -> float:
    """The sum of a /proc/<pid>/status memory field (VmRSS, VmHWM) over ``pids``."""
    total_kb = 0
    for pid in pids:
        try:
            total_kb += int(re.search(rf"{field}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
        except (OSError, AttributeError):
            continue
    return total_kb / 1024


def reset_peak_rss(pids: list[int]) -> None:
    """VmHWM (peak resident memory) counts from now on (as root or the processes' owner)."""
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            continue


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    return sum(stat[11] + stat[12] for pid in pids if (stat := _stat(pid)) is not None) / TICKS


def machine_cpu_seconds() -> tuple[float, float, float]:
    """CPU time of all processes (user, nice, system), of interrupts (irq, softirq: here mostly
    loopback networking), and stolen by the hypervisor (its other guests ran on our CPUs), all
    CPUs together."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system) / TICKS, (irq + softirq) / TICKS, steal / TICKS


def children_cpu_seconds() -> float:
    """Of the children this process has waited for: wrk, the open-loop generator."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuUse:
    """Where the machine's CPU time went while the block ran: the platform's processes, the
    load generator, the machine's other processes (other work on a shared machine), interrupts,
    the hypervisor."""

    def __init__(self, platform, api):
        postmaster = int((platform.pg.data / "postmaster.pid").read_text().split()[0])
        self.pids = {"api": group_pids(api.pid), "postgresql": children_and_self(postmaster),
                     "redis": [platform.redis.process.pid], "bench": [os.getpid()]}
        self.seconds: dict[str, float] = {}

    def __enter__(self):
        self._before = ({name: cpu_seconds(pids) for name, pids in self.pids.items()}, children_cpu_seconds(),
                        machine_cpu_seconds(), time.monotonic())
        return self

    def __exit__(self, *exc):
        ours, generator, (processes, interrupts, stolen), started = self._before
        self.window = time.monotonic() - started
        self.seconds = {name: cpu_seconds(pids) - ours[name] for name, pids in self.pids.items()}
        self.seconds["load generator"] = children_cpu_seconds() - generator
        processes_now, interrupts_now, stolen_now = machine_cpu_seconds()
        self.seconds["other processes"] = max(0.0, processes_now - processes - sum(self.seconds.values()))
        self.seconds["interrupts"] = interrupts_now - interrupts
        self.seconds["stolen"] = stolen_now - stolen

    def __str__(self) -> str:
        return (f"CPU seconds ({os.cpu_count()} CPUs x {self.window:.1f} s): "
                + ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.seconds.items()))


def _raise_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, GENERATOR_NICE)
    except PermissionError:
        pass  # not root: the bench's own priority (the figures say which)


def open_loop(url: str, token: str, rate: float, seconds: int) -> dict:
    """``openloop.py`` in a process of its own, at GENERATOR_NICE where this user may raise it."""
    generator = subprocess.Popen([sys.executable, str(HERE / "openloop.py"), url, "--rate", str(rate),
                                  "--seconds", str(seconds)], env=dict(os.environ, BENCH_TOKEN=token),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=_raise_priority)
    niceness = _stat(generator.pid)[16]
    out, err = generator.communicate(timeout=seconds + 120)
    line = next((l for l in out.splitlines() if l.startswith("OPENLOOP_JSON ")), None)
    if line is None:
        sys.exit(f"bench-api: the open-loop generator printed no result:\n{out}\n{err}")
    return dict(json.loads(line.split(" ", 1)[1]), nice=niceness)


def overload(platform, api, url: str, sustainable_rps: float, seconds: int) -> dict:
    """OVERLOAD_FACTOR x the sustainable rate, open loop, for ``seconds``: latency by status,
    the API's memory, and where the machine's CPU went meanwhile."""
    token = platform.token("bench-overload")
    rate = OVERLOAD_FACTOR * sustainable_rps
    cpu = CpuUse(platform, api)
    rss_before = memory_mb(cpu.pids["api"], "VmRSS")
    reset_peak_rss(cpu.pids["api"])
    load = os.getloadavg()
    with cpu:
        load_gen = open_loop(url, token, rate, seconds)
    statuses = {int(k): v for k, v in load_gen["statuses"].items()}
    accepted, refused = statuses.pop(202, 0), statuses.pop(503, 0)
    return {"sustainable_rps": sustainable_rps, "offered_rps": load_gen["sent"] / seconds, "seconds": seconds,
            "generator": load_gen, "accepted": accepted, "refused": refused, "others": statuses,
            "accepted_rps": accepted / seconds, "refused_rps": refused / seconds,
            "rss_before_mb": rss_before, "rss_peak_mb": memory_mb(cpu.pids["api"], "VmHWM"),
            "rss_after_mb": memory_mb(cpu.pids["api"], "VmRSS"), "api_processes": len(cpu.pids["api"]),
            "cpu": str(cpu), "cpu_seconds": cpu.seconds, "load_before": load, "load_after": os.getloadavg()}


def overload_tasks(platform) -> dict:
    """The tasks the overload phase created, and how they ended."""
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


def print_overload(over: dict, over_tasks: dict, seconds: int) -> None:
    """The overload phase's lines of the report: what was offered, accepted and refused, and at what cost."""
    g = over["generator"]
    acc, ref = g["accepted"], g["refused"]
    print(f"  overload: sustainable {over['sustainable_rps']:.0f} req/s (above) x {OVERLOAD_FACTOR} = offered "
          f"{over['offered_rps']:.0f} req/s for {seconds}s, open loop ({g['sent']} creates on a fixed schedule, "
          f"each timed from when it was due; {g['connections']} connections)")
    print(f"    accepted (202) {over['accepted_rps']:6.0f} /s  p50 {ms(acc['p50_ms'])}  p95 {ms(acc['p95_ms'])}  "
          f"p99 {ms(acc['p99_ms'])}  max {ms(acc['max_ms'])}")
    print(f"    refused  (503) {over['refused_rps']:6.0f} /s  p50 {ms(ref['p50_ms'])}  p95 {ms(ref['p95_ms'])}  "
          f"p99 {ms(ref['p99_ms'])}  max {ms(ref['max_ms'])}")
    print(f"    other answers {over['others'] or 'none'}, unanswered {g['unanswered']}; generator: "
          f"{g['waited_for_connection']} requests waited for a free connection, at worst {g['max_schedule_lag_ms']:.1f} ms "
          f"behind schedule")
    print(f"    API RSS ({over['api_processes']} processes) {over['rss_before_mb']:.0f} MB before, "
          f"{over['rss_peak_mb']:.0f} MB peak (each process's own peak, summed), {over['rss_after_mb']:.0f} MB after")
    print(f"    accepted tasks: {over_tasks['rows']} rows for {over['accepted']} 202s, "
          f"{over_tasks['succeeded']} succeeded once the workers drained them")
    print(f"    {over['cpu']}; generator at nice {g['nice']}; load average "
          f"{' '.join(f'{v:.2f}' for v in over['load_before'])} before, "
          f"{' '.join(f'{v:.2f}' for v in over['load_after'])} after")


def overload_target_met(over: dict, over_tasks: dict) -> bool:
    """Refusals fast, accepted requests still served in time, nothing else answered, and every
    accepted task run."""
    g = over["generator"]
    acc, ref = g["accepted"], g["refused"]
    return (ref["p99_ms"] is not None and ref["p99_ms"] < 50 and acc["p95_ms"] is not None
            and acc["p95_ms"] < 100 and not over["others"] and g["unanswered"] == 0
            and over_tasks["succeeded"] == over_tasks["rows"] == over["accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each load phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--e2e-tasks", type=int, default=200)
    parser.add_argument("--edge-url", help="also measure create-task through this edge (e.g. http://127.0.0.1:18080)")
    parser.add_argument("--jwt-key-file", help="the edge environment's JWT signing key file")
    parser.add_argument("--backend-pairs", type=int, default=3,
                        help="pairs of windows (files, vault) of the secrets-backend phase")
    parser.add_argument("--short", action="store_true",
                        help="3 s phases, 50 end-to-end tasks, 2 backend pairs: a check that the bench works (`make test`)")
    args = parser.parse_args()
    if args.short:
        args.seconds, args.e2e_tasks, args.backend_pairs = 3, 50, 2

    load_at_start = os.getloadavg()
    platform = start_platform(rate_limit_per_minute=10_000_000, worker_concurrency=16, reconcile_after_seconds=30.0)
    pending_vault = None
    try:
        token = platform.token("bench")
        api = platform.spawn_api(processes=2)
        url = api.url
        wrk(url, token, 2, args.connections)  # warm-up: pools filled, code paths hot
        # wrk leaves without waiting for its last answers: those requests are still in flight for
        # a moment, and with the next run's connections they would pass the concurrency limit.
        time.sleep(1)
        with CpuUse(platform, api) as direct_cpu:
            direct = wrk(url, token, args.seconds, args.connections)
        time.sleep(1)  # wrk's last requests (above)
        obs = observed.compare(lambda: _settled(wrk(url, token, args.seconds, args.connections)), url, free_port())
        edge = None
        if args.edge_url:
            edge_token = token_for(Path(args.jwt_key_file), "bench") if args.jwt_key_file else token
            edge = wrk(args.edge_url, edge_token, args.seconds, args.connections)
        over = overload(platform, api, url, direct["rps"], args.seconds)
        for _ in range(2):
            platform.start_worker(TASKS_WORKER_METRICS_PORT="0")
        pending_vault = on_vault.PendingVault(platform)  # its init waits on raft's timers meanwhile
        # Drain the backlog the load phases left (worker throughput), then measure latency idle.
        drain = drain_backlog(platform)
        over_tasks = overload_tasks(platform)
        e2e = end_to_end_latency(platform, url, token, args.e2e_tasks)
        platform.stop_workers()
        platform.stop_processes(chosen=[api])  # idle from here: its CPU out of the next phase
        backends = on_vault.compare(
            platform, pending_vault, lambda to: _settled(wrk(to, token, args.seconds, args.connections)),
            lambda to: _settled(wrk(to, token, 1 if args.short else 2, args.connections)), args.seconds,
            args.backend_pairs)
        baseline = pgbench_insert_tps(platform, args.seconds)
    finally:
        if pending_vault:
            pending_vault.stop()
        platform.stop()

    ratio = direct["rps"] / baseline
    print(f"bench-api ({args.connections} connections, {args.seconds}s per phase, API 2 processes, loopback; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in load_at_start)} at the start)")
    print(f"  create-task direct   {direct['rps']:8.0f} req/s  p50 {direct['p50_ms']:6.1f} ms  p95 {direct['p95_ms']:6.1f} ms"
          f"  p99 {direct['p99_ms']:6.1f} ms  errors {direct['errors']}  non-2xx {direct['non2xx']}")
    print(f"    {direct_cpu}")
    if edge:
        print(f"  create-task via edge {edge['rps']:8.0f} req/s  p50 {edge['p50_ms']:6.1f} ms  p95 {edge['p95_ms']:6.1f} ms"
              f"  p99 {edge['p99_ms']:6.1f} ms  errors {edge['errors']}  non-2xx {edge['non2xx']}")
    observed.print_comparison(obs, args.seconds)
    print_overload(over, over_tasks, args.seconds)
    on_vault.print_comparison(backends)
    print(f"  worker drain         {drain['tasks_per_s']:8.0f} tasks/s  ({drain['backlog']} queued tasks, "
          f"{drain['left']} left, 2 workers)")
    print(f"  end-to-end (created -> succeeded, {e2e['done']}/{e2e['tasks']} tasks)  p50 {e2e['p50_ms']:.1f} ms"
          f"  p95 {e2e['p95_ms']:.1f} ms  p99 {e2e['p99_ms']:.1f} ms")
    print(f"  pgbench single-row INSERT baseline  {baseline:8.0f} tps (8 clients)")
    print(f"  ratio create-task/s : pgbench insert tps = {ratio:.2f}")
    target = direct["rps"] >= 1000 and direct["p95_ms"] < 50 and direct["non2xx"] == direct["errors"] == 0
    print(f"  target >= 1000 create-task/s at p95 < 50 ms, none refused: {'MET' if target else 'MISSED'}")
    overload_target = overload_target_met(over, over_tasks)
    print(f"  overload target refused p99 < 50 ms, accepted p95 < 100 ms, no other answer, every accepted task "
          f"succeeded: {'MET' if overload_target else 'MISSED'}")
    print("BENCH_JSON " + json.dumps({"direct": direct, "edge": edge, "overload": over, "overload_tasks": over_tasks,
                                      "direct_cpu_seconds": direct_cpu.seconds, "observability": obs, "secrets_backend": backends, "e2e": e2e, "drain": drain, "pgbench_insert_tps": baseline,
                                      "ratio_to_pgbench": ratio}))


if __name__ == "__main__":
    main()
