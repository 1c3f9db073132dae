"""`make bench-failover`: the data tier's failover figures, under task traffic, in one run.

- Redis: the master's container is stopped; seconds until a write succeeds on the master the
  Sentinels then name (detection is redis.down_after_ms of that, printed alongside).
- PostgreSQL: `make pg-promote` of a replica; seconds from the promote to a write accepted on
  the new primary, and from stopping the old primary to that write.
- For each drill: tasks the API accepted while it ran vs tasks processed (must be equal), and
  the longest stretch in which no task creation succeeded.
Rolls out ENV first (images present). --short: one run of each drill (`make test`).

The environment (tests/bench/benchenv.py): a real one is refused; one the bench did not create
is left as it was found: the Redis master and the PostgreSQL primary it found are made so again
(SENTINEL FAILOVER; `make pg-promote`), data kept; one it created is removed
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
from shipyard.components.postgres.promote import pg_promote, primary_of  # noqa: E402
from shipyard.components.redis.failover import redis_failover, sentinel_masters  # noqa: E402
from shipyard.inventory import load_environment  # noqa: E402
from shipyard.components.postgres.instances import node_names as postgres_nodes  # noqa: E402
from tests.bench import benchenv  # noqa: E402
from tests.drill_traffic import Traffic, api_client, wait_all_processed  # noqa: E402

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


def postgres_drill(settings, client) -> dict:
    old = primary_of(settings)
    replica = next(node for node in postgres_nodes(settings) if node != old)
    with Traffic(client) as traffic:
        time.sleep(1)
        done = pg_promote(settings, replica)
        time.sleep(2)
    counts = wait_all_processed(client, traffic.accepted)
    return {"seconds": done.promote_s, "unavailable": done.writes_unavailable_s, "rebuild": done.rebuild_s,
            "gap": traffic.longest_gap_s, **counts}


def put_back_roles(settings, redis_master: str, pg_primary: str) -> None:
    """The Redis master and the PostgreSQL primary the bench found, made so again."""
    for _ in range(settings.redis.replicas + 1):  # Sentinel picks the replica: one failover each
        if sentinel_masters(settings)[0] == redis_master:
            break
        redis_failover(settings)
    else:
        sys.exit(f"bench: the Redis master is {sentinel_masters(settings)[0]}, not {redis_master} as found")
    if primary_of(settings) != pg_primary:
        pg_promote(settings, pg_primary)


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
    runs: dict[str, list[dict]] = {"redis": [], "postgres": []}
    try:
        benchenv.roll_out(args.env, "bench-failover")
        client = api_client(settings)
        redis_master, pg_primary = sentinel_masters(settings)[0], primary_of(settings)
        for _ in range(args.runs):
            runs["redis"].append(redis_drill(settings, client))
            runs["postgres"].append(postgres_drill(settings, client))
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
    print(f"  postgres: promote -> write on new primary      {med('postgres', 'seconds'):6.2f}")
    print(f"  postgres: old primary stopped -> write          {med('postgres', 'unavailable'):6.2f}")
    print(f"  postgres: old primary rebuilt as a replica      {med('postgres', 'rebuild'):6.2f}")
    print(f"  API: longest time without an accepted task    redis {med('redis', 'gap'):5.2f}  "
          f"postgres {med('postgres', 'gap'):5.2f}")
    for drill, results in runs.items():
        pairs = ", ".join(f"{r['accepted']}/{r['processed']}" for r in results)
        print(f"  {drill:8s} tasks accepted/processed per run: {pairs}")
    print(f"  tasks lost: {lost}   {'OK' if lost == 0 else 'MISSED'}")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
