"""`make bench-failover`: the data tier's failover figures, under task traffic, in one run.

- Redis: the master's container is stopped; seconds until a write succeeds on the master the
  Sentinels then name (detection is redis.down_after_ms of that, printed alongside).
- PostgreSQL (Patroni): the leader's container killed (SIGKILL, a dead host);
  seconds from the kill to the new leader and to the first task the API acknowledged from a
  request sent after it, then the dead node started and back as a replica. A planned switchover
  (`make pg-promote`): seconds from the request to the new leader taking writes. And the cost of
  zero loss: task creates per second through the edge with synchronous mode on and off, in one
  run (the mode switched live through Patroni's PATCH /config), as a ratio.
- For each drill: tasks the API accepted while it ran vs tasks processed (must be equal), and
  the longest stretch in which no task creation succeeded.
Rolls out ENV first (images present). --short: one run of each drill (`make test`).

The environment (tests/bench/benchenv.py): a real one is refused; one the bench did not create
is left as it was found: the Redis master and the PostgreSQL leader it found are made so again
(SENTINEL FAILOVER; Patroni's switchover), data kept; one it created is removed
(`make down VOLUMES=1`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from shipyard.controller.drills import container_of  # noqa: E402
from shipyard.components.postgres.roles import primary_of  # noqa: E402
from shipyard.components.redis.failover import redis_failover, sentinel_masters  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.components.postgres.instances import node_names as postgres_nodes  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import Traffic, api_client, wait_all_processed  # noqa: E402
from tests.patroni_view import cluster_seen_by, healthy_cluster, leader_of  # noqa: E402
from tests.waiting import wait_for  # noqa: E402

_REDIS_AUTH = "REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf)"


def _redis(settings, service: str, *args: str) -> str:
    script = f"{_REDIS_AUTH} redis-cli " + " ".join(args)
    return subprocess.run(["docker", "exec", container_of(settings, service), "sh", "-c", script],
                          capture_output=True, text=True, timeout=10).stdout.strip()


def redis_drill(settings, client) -> dict:
    """Stop the master's container; seconds until a write succeeds on the newly named master."""
    old = sentinel_masters(settings)[0]
    old_service = old.split(":")[0]  # single host: Sentinel announces service names
    container = container_of(settings, old_service)
    with Traffic(client) as traffic:
        time.sleep(1)
        stopped = time.monotonic()
        subprocess.run(["docker", "stop", container], check=True, capture_output=True)
        took = None
        while time.monotonic() - stopped < 90:
            masters = set(sentinel_masters(settings))
            if len(masters) == 1 and old not in masters:
                new_service = masters.pop().split(":")[0]
                if _redis(settings, new_service, "set", "shipyard:bench-failover", str(time.time())) == "OK":
                    took = time.monotonic() - stopped
                    break
            time.sleep(0.05)
        time.sleep(2)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    if took is None:
        sys.exit("bench: no new Redis master accepted writes within 90 s")
    counts = wait_all_processed(client, traffic.accepted)
    # Before the next drill, the old master must be back, as a replica of the new one.
    deadline = time.monotonic() + 60
    while _redis(settings, old_service, "role").split("\n")[0] != "slave" and time.monotonic() < deadline:
        time.sleep(0.5)
    return {"seconds": took, "gap": traffic.longest_gap_s, **counts}


def _cluster(settings):
    from shipyard.components.postgres.commands import _patroni

    return _patroni(settings)


def patroni_kill_drill(settings, client) -> dict:
    """The leader's container SIGKILLed under traffic: Patroni promotes a replica by itself."""
    nodes = postgres_nodes(settings)
    ttl = settings.postgres.patroni.ttl_s
    leader = leader_of(wait_for("a healthy Patroni cluster", lambda: healthy_cluster(settings, nodes), 120))
    survivors = [n for n in nodes if n != leader]
    container = container_of(settings, leader)
    with Traffic(client) as traffic:
        wait_for("tasks accepted before the kill", lambda: len(traffic.accepted) >= 20, 60)
        subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True, capture_output=True)
        killed = time.monotonic()
        wait_for("a new leader", lambda: any(leader_of(cluster_seen_by(settings, n)) in survivors for n in survivors),
                 ttl + 30)
        leader_s = time.monotonic() - killed
        first = wait_for("a task acknowledged after the kill",
                         lambda: next((a for s, a in list(traffic.acknowledged) if s > killed), None), ttl + 40)
    counts = wait_all_processed(client, traffic.accepted)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    started = time.monotonic()
    wait_for(f"{leader} back as a replica", lambda: healthy_cluster(settings, nodes), 180)
    return {"leader": leader_s, "seconds": first - killed, "rejoin": time.monotonic() - started,
            "gap": traffic.longest_gap_s, **counts}


def patroni_switchover_drill(settings, client) -> dict:
    """`make pg-promote` under Patroni: a switchover to the sync standby (or least lag) under traffic."""
    nodes = postgres_nodes(settings)
    wait_for("a healthy Patroni cluster", lambda: healthy_cluster(settings, nodes), 120)
    with Traffic(client) as traffic:
        wait_for("tasks accepted before the switchover", lambda: len(traffic.accepted) >= 20, 60)
        asked = time.monotonic()
        done = _cluster(settings).switch_over()
        wait_for("a task acknowledged after the switchover",
                 lambda: next((a for s, a in list(traffic.acknowledged) if s > asked + done.writable_s), None), 60)
    counts = wait_all_processed(client, traffic.accepted)
    return {"seconds": done.writable_s, "streaming": done.streaming_s or 0.0, "gap": traffic.longest_gap_s, **counts}


def create_rate(client, seconds: float, threads: int = 4, cap: int = 20000) -> float:
    """Task creates acknowledged per second through the edge, ``threads`` clients back to back
    for ``seconds`` (at most ``cap`` requests: loopback, bounded)."""
    import threading

    import requests

    done: list[int] = []
    stop = time.monotonic() + seconds

    def run() -> None:
        session = requests.Session()
        session.headers.update(client.headers)
        ok = 0
        while time.monotonic() < stop and len(done) + ok < cap:
            r = session.post(f"{client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": ok}}, timeout=10)
            ok += r.status_code == 202
        done.append(ok)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.monotonic() - started)


def synchronous_cost(settings, client, seconds: float) -> dict:
    """Creates per second with synchronous mode on and off (switched live through PATCH /config,
    each wait until the leader's synchronous_standby_names says so), the settings' mode put back."""
    cluster = _cluster(settings)
    # Waited for: the kill just before leaves the old leader rejoining, and its synchronous
    # standby named a Patroni loop or two later.
    node = leader_of(wait_for("a healthy Patroni cluster", lambda: healthy_cluster(settings, postgres_nodes(settings)),
                              120))

    def set_mode(on: bool) -> None:
        status, text = cluster.transport.api(node, "PATCH", "/config", {"synchronous_mode": on})
        if status != 200:
            sys.exit(f"bench: PATCH /config synchronous_mode={on}: {status} {text[-200:]}")
        wait_for(f"synchronous mode {'on' if on else 'off'} on the leader",
                 lambda: bool((cluster.transport.sql(node, "SHOW synchronous_standby_names") or [[""]])[0][0]) == on, 60)

    rates = {}
    try:
        for on in (True, False):
            set_mode(on)
            create_rate(client, 1)  # warm: connections, plans
            rates[on] = create_rate(client, seconds)
    finally:
        set_mode(settings.postgres.patroni.synchronous)
    return {"sync": rates[True], "async": rates[False]}


def put_back_roles(settings, redis_master: str, pg_primary: str) -> None:
    """The Redis master and the PostgreSQL primary the bench found, made so again."""
    for _ in range(settings.redis.replicas + 1):  # Sentinel picks the replica: one failover each
        if sentinel_masters(settings)[0] == redis_master:
            break
        redis_failover(settings)
    else:
        sys.exit(f"bench: the Redis master is {sentinel_masters(settings)[0]}, not {redis_master} as found")
    if primary_of(settings) != pg_primary:
        _cluster(settings).switch_over(pg_primary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=benchenv.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="ci")
    parser.add_argument("--runs", type=int, default=2, help="repetitions of each drill; the median is reported")
    parser.add_argument("--short", action="store_true", help="one run of each drill (a check that the bench works)")
    args = parser.parse_args()
    if args.short:
        args.runs = 1
    settings = load_environment(REPO, args.env, dict(os.environ))
    benchenv.refuse_real(settings, "bench-failover")
    if not postgres_nodes(settings)[1:] or not settings.redis.sentinels:
        sys.exit(f"bench: {args.env} needs postgres.replicas >= 1 and redis.sentinels >= 1")
    was = benchenv.found(settings)
    runs: dict[str, list[dict]] = {"redis": [], "postgres": [], "switchover": []}
    try:
        benchenv.roll_out(args.env, "bench-failover")
        client = api_client(settings)
        redis_master, pg_primary = sentinel_masters(settings)[0], primary_of(settings)
        for _ in range(args.runs):
            runs["redis"].append(redis_drill(settings, client))
            runs["postgres"].append(patroni_kill_drill(settings, client))
            runs["switchover"].append(patroni_switchover_drill(settings, client))
        cost = synchronous_cost(settings, client, 5 if args.short else 20)
        if was.deployed:
            put_back_roles(settings, redis_master, pg_primary)
    finally:
        left = benchenv.leave_as_found(was, "bench-failover")
    if not left:
        sys.exit(1)

    def med(drill: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[drill])

    lost = sum(r["accepted"] - r["processed"] for rs in runs.values() for r in rs)
    print(f"bench-failover env={args.env} runs={args.runs} (median seconds; every drill under task traffic)")
    print(f"  redis: master stopped -> write on new master   {med('redis', 'seconds'):6.2f}"
          f"   (of which detection, down_after_ms: {settings.redis.down_after_ms / 1000:.2f})")
    mode = "synchronous" if settings.postgres.patroni.synchronous else "asynchronous"
    print(f"  postgres (Patroni, {mode}, ttl {settings.postgres.patroni.ttl_s} s): leader killed -> new leader "
          f"{med('postgres', 'leader'):6.2f}")
    kill_s = med('postgres', 'seconds')
    print(f"  postgres: leader killed -> first acknowledged write {kill_s:6.2f}   (target 15.00: "
          f"{'OK' if kill_s <= 15 else 'MISSED'})")
    print(f"  postgres: killed node back as a replica after its start {med('postgres', 'rejoin'):6.2f}")
    print(f"  postgres: switchover (make pg-promote) -> writes on the new leader {med('switchover', 'seconds'):6.2f}"
          f"   (old leader streaming {med('switchover', 'streaming'):5.2f})")
    print(f"  postgres: task creates/s through the edge, synchronous {cost['sync']:7.1f}, asynchronous "
          f"{cost['async']:7.1f}: ratio {cost['sync'] / cost['async']:.3f} (the cost of zero loss)")
    print(f"  API: longest time without an accepted task    " + "  ".join(f"{drill} {med(drill, 'gap'):5.2f}"
                                                                        for drill in runs))
    for drill, results in runs.items():
        pairs = ", ".join(f"{r['accepted']}/{r['processed']}" for r in results)
        print(f"  {drill:8s} tasks accepted/processed per run: {pairs}")
    print(f"  tasks lost: {lost}   {'OK' if lost == 0 else 'MISSED'}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
