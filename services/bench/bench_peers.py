"""`make bench-peers`: the same workload through Shipyard's task platform and through Celery,
arq and RQ (issue 23), on this machine in one run, loopback only, bounded in count and time:

- submit rate: 8 client processes enqueue a fixed count of `checksum` tasks as fast as each
  enqueue is acknowledged, with no worker running (Shipyard: ``POST /v1/tasks`` with a bearer
  token, answered 202 once the row is committed; a peer: its client library's enqueue);
- drain rate: that backlog, then 2 worker processes started: tasks a second between the first
  and the last completion as the system stored it (the workers' start-up is printed apart);
- latency: 50 tasks a second, open loop, for a fixed window, each from when it was due to when
  its result was stored (p50, p95);
- kill -9: a few 1 s tasks, a worker killed -9 (its whole process group) while it runs one,
  started again: does every acknowledged task end, and within what time.

Each system gets the machine to itself for the first three (one after the other); the kill -9
phase runs them all at once (sleeping tasks: no contest for the CPUs, and its waits overlap).
Shipyard runs as ``taskplatform_testing.servers`` starts it for every test and bench (API with 2
processes, PostgreSQL with fsync=off, Redis without persistence); each peer gets a Redis server
of its own, the same binary and settings, and Celery keeps its results in a database of the
same PostgreSQL. The peers come from PyPI at the versions ``peers-requirements.txt`` pins, in a
venv of the bench's own (``peers/venv.py``); their client and worker code is ``peers/``, and each
peer's module says which of its documented reliability settings are used, and why.

A bench prints figures: it fails only when it could not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from peers import figures, venv  # noqa: E402  (services/bench/peers/)
from peers.systems import PeerSystem, ShipyardSystem, System, reply  # noqa: E402
from taskplatform_testing.servers import start_platform  # noqa: E402

PEERS = ("celery", "arq", "rq")
WORKERS = 2
SLOW_TASKS = 4  # in the kill -9 phase: enough that a worker holds one while the others queue
SLOW_TASK_S = 1.0
CELERY_DATABASE = "celery_results"
DEFAULT_VENV = REPO / ".cache" / "bench-peers-venv"


@dataclass
class Sizes:
    clients: int = 8
    per_client: int = 2500  # 8 x 2,500: the 20,000-task backlog
    rate: float = 50.0
    latency_s: float = 20.0
    drain_bound_s: float = 600.0
    # RQ finds a killed worker's job only after its heartbeat ran out (>= 60 s), Celery over Redis
    # within about 100 s (peers/*_peer.py): the full run waits long enough to see both.
    survival_bound_s: float = 150.0

    @property
    def backlog(self) -> int:
        return self.clients * self.per_client


SHORT = Sizes(per_client=125, latency_s=5.0, drain_bound_s=120.0, survival_bound_s=20.0)


def submit_phase(system: System, sizes: Sizes) -> dict:
    """``sizes.clients`` driver processes, each connected and READY before any is told GO."""
    clients = [system.spawn_driver("submit", "--first", str(k * sizes.per_client), "--count", str(sizes.per_client),
                                   stdin=subprocess.PIPE) for k in range(sizes.clients)]
    for client in clients:
        ready = client.stdout.readline().strip()
        if ready != "READY":
            reply(system.name, "submit", client, 30)  # exits with what the client said
    for client in clients:
        client.stdin.write("GO\n")
        client.stdin.flush()
    return figures.submit_figures([reply(system.name, "submit", c, sizes.drain_bound_s) for c in clients])


def drain_phase(system: System, sizes: Sizes, submitted: int) -> dict:
    waiter = system.spawn_driver("wait-drained", "--expected", str(submitted), "--bound", str(sizes.drain_bound_s))
    spawned_at = time.time()
    for _ in range(WORKERS):
        system.start_worker()
    return figures.drain_figures(submitted, spawned_at, reply(system.name, "wait-drained", waiter,
                                                              sizes.drain_bound_s + 60))


def latency_phase(system: System, sizes: Sizes) -> dict:
    result = system.driver("open-loop", "--rate", str(sizes.rate), "--seconds", str(sizes.latency_s),
                           "--first", str(sizes.backlog), "--bound", "60", timeout=sizes.latency_s + 120)
    return figures.latency_figures(sizes.rate, sizes.latency_s, result)


def measure(system: System, sizes: Sizes) -> dict:
    started, load = time.monotonic(), os.getloadavg()[0]  # a busy machine shows here
    try:
        submitted = submit_phase(system, sizes)
        drain = drain_phase(system, sizes, submitted["tasks"])
        latency = latency_phase(system, sizes)
    finally:
        system.stop_workers()
    print(f"bench-peers: {system.name}: submit, drain, latency measured in {time.monotonic() - started:.0f} s "
          f"(load average {load:.2f} before, {os.getloadavg()[0]:.2f} after)", flush=True)
    return {"submit": submitted, "drain": drain, "latency": latency}


def survival_phase(systems: list[System], sizes: Sizes) -> dict[str, dict]:
    """Every system at once: SLOW_TASKS tasks of SLOW_TASK_S, 2 workers; as soon as a worker
    runs one, kill -9 it and start another; then how the acknowledged tasks ended, within
    ``sizes.survival_bound_s`` of the kill."""
    started = time.monotonic()
    marks = {s.name: s.root / "slow-task-marks" for s in systems}
    waits: dict[str, subprocess.Popen] = {}
    try:
        # Queued before the workers start, so that the watch below sees the first task begin.
        enqueues = {s.name: s.spawn_driver("enqueue-slow", "--count", str(SLOW_TASKS), "--seconds", str(SLOW_TASK_S),
                                           "--marker-file", str(marks[s.name])) for s in systems}
        ids = {name: reply(name, "enqueue-slow", p, 60)["ids"] for name, p in enqueues.items()}

        def wait_ended(system: System) -> None:
            waits[system.name] = system.spawn_driver("wait-ended", "--ids", json.dumps(ids[system.name]), "--bound",
                                                     str(sizes.survival_bound_s), "--marker-file",
                                                     str(marks[system.name]))

        for system in systems:
            for _ in range(WORKERS):
                system.start_worker()
        killed = _kill_a_busy_worker_each(systems, marks, time.monotonic() + 15, on_killed=wait_ended)
        for system in (s for s in systems if s.name not in waits):
            wait_ended(system)  # never seen busy: how its tasks ended all the same
        ended = {name: reply(name, "wait-ended", p, sizes.survival_bound_s + 60) for name, p in waits.items()}
    finally:
        for process in waits.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for system in systems:
            system.stop_workers()
    print(f"bench-peers: every system: kill -9 of a worker running a task, in {time.monotonic() - started:.0f} s",
          flush=True)
    results = {}
    for system in systems:
        killed_at, in_hand = killed.get(system.name, (None, 0))
        outcome = ended[system.name]
        last_done_at = outcome.pop("last_done_at")
        seconds = last_done_at - killed_at if killed_at and last_done_at else None
        results[system.name] = figures.survival_figures(SLOW_TASKS, in_hand if killed_at else None, outcome, seconds,
                                                        sizes.survival_bound_s)
    return results


def _kill_a_busy_worker_each(systems: list[System], marks: dict[str, Path], deadline: float, on_killed) -> dict:
    """system name -> (when its worker was killed, how many tasks it held). The worker holding
    the most is killed; a replacement is started at once, as a supervisor would, and
    ``on_killed(system)`` called."""
    killed = {}
    while len(killed) < len(systems) and time.monotonic() < deadline:
        for system in (s for s in systems if s.name not in killed):
            busy = system.busy_workers(marks[system.name])
            if busy:
                worker, in_hand = max(busy.items(), key=lambda item: item[1])
                system.kill(worker)
                killed[system.name] = (time.time(), in_hand)
                system.start_worker()
                on_killed(system)
        time.sleep(0.02)
    return killed


def start_systems(root: Path, python: Path, peers: list[str]) -> tuple[object, list[System]]:
    """The platform (PostgreSQL, Redis, API) and every peer's Redis. The caller stops them."""
    platform = start_platform(root, rate_limit_per_minute=10_000_000, worker_concurrency=16,
                              reconcile_after_seconds=30.0)
    systems: list[System] = []
    try:
        api = platform.spawn_api(processes=2)
        pg = platform.pg
        with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password, dbname=pg.database,
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{CELERY_DATABASE}"')
        systems.append(ShipyardSystem(platform, python, {
            "SHIPYARD_API_URL": api.url, "SHIPYARD_TOKEN": platform.token("bench-peers", ttl_seconds=6 * 3600),
            "SHIPYARD_PG_DSN": f"host=127.0.0.1 port={pg.port} user={pg.user} password={pg.password} "
                               f"dbname={pg.database}"}))
        peer_env = {"PEER_PG_URL": f"postgresql+psycopg://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/{CELERY_DATABASE}"}
        for name in peers:
            systems.append(PeerSystem(name, python, platform.root / "peers" / name, peer_env))
    except BaseException:
        stop_systems(platform, systems)
        raise
    return platform, systems


def stop_systems(platform, systems: list[System]) -> None:
    for system in systems:
        try:
            system.stop()
        except Exception as exc:  # the others and the platform are still stopped
            print(f"bench-peers: stopping {system.name}: {exc!r}", file=sys.stderr)
    platform.stop()


SHIPYARD_SETTINGS = ("HTTP/1.1 + JWT, API 2 processes; 202 = row committed in PostgreSQL, then XADD; "
                     "worker_concurrency 16, lease 3 s, claim idle 2 s (servers.py's test settings)")


def report(results: dict[str, dict], described: dict[str, dict], sizes: Sizes, took_s: float) -> None:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"bench-peers ({os.cpu_count()} CPUs, loopback; {sizes.clients} clients x {sizes.per_client} submits, "
          f"backlog {sizes.backlog}, {WORKERS} worker processes a system, latency at {sizes.rate:.0f} tasks/s for "
          f"{sizes.latency_s:.0f} s, kill -9 bound {sizes.survival_bound_s:.0f} s; {took_s:.0f} s; "
          f"load average {load} at the end)")
    for name in results:
        versions = ", ".join(f"{k} {v}" for k, v in described[name]["versions"].items())
        settings = SHIPYARD_SETTINGS if name == figures.SHIPYARD else described[name]["settings"]
        print(f"  {name}{f' ({versions})' if versions else ''}: {settings}")
    print()
    for line in figures.table(results):
        print(line)
    print()
    for name, result in results.items():
        for line in figures.detail_lines(name, result):
            print(line)
    print()
    for line in figures.ratio_lines(results):
        print(line)
    print()
    for text, met in figures.goals(results):
        print(f"  {'PASS  ' if met else 'MISSED'} {text}")
    print("BENCH_JSON " + json.dumps({"sizes": sizes.__dict__, "results": results, "described": described}))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="backlog 1,000, a 5 s latency window, a 20 s kill -9 "
                                                             "bound: a check that the bench works (`make test`)")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the peers' venv (made when missing)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"the peers to run, of {','.join(PEERS)}")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    if not set(peers) <= set(PEERS):
        parser.error(f"--peers: {','.join(sorted(set(peers) - set(PEERS)))} is not one of {','.join(PEERS)}")
    sizes = SHORT if args.short else Sizes()
    # A SIGTERM (a CI timeout, `kill`) ends the run through the same finally blocks as a failure:
    # every process it started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    started = time.monotonic()
    python = venv.ensure(args.venv, HERE / "peers-requirements.txt")
    root = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        platform, systems = start_systems(root, python, peers)
        try:
            described = {s.name: s.driver("prepare", timeout=120) for s in systems}
            results = {s.name: measure(s, sizes) for s in systems}
            for name, survival in survival_phase(systems, sizes).items():
                results[name]["survival"] = survival
        finally:
            stop_systems(platform, systems)
    except BaseException:
        print(f"bench-peers: the servers' and workers' logs are in {root}", file=sys.stderr)
        raise
    shutil.rmtree(root)  # a run that measured leaves nothing behind
    report(results, described, sizes, time.monotonic() - started)


if __name__ == "__main__":
    main()
