"""`make redis-failover`: SENTINEL FAILOVER, wait until every Sentinel names the new master, then
until every replica (the old master among them) replicates from it again: only then is the set
as redundant as before, and ready for the next failover."""

from __future__ import annotations

import time

from shipyard.components.redis import SENTINEL_CONF
from shipyard.components.redis.instances import sentinel_names as redis_sentinels
from shipyard.controller.drills import run_in
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


def sentinel_masters(settings: EnvironmentSettings) -> list[str]:
    """What each Sentinel names as the master now (host:port)."""
    answers = []
    for sentinel in redis_sentinels(settings):
        _, out, _ = run_in(settings, sentinel, ["sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "get-master-addr-by-name",
                                                settings.redis.master_name])
        answers.append(":".join(out.split()[:2]))
    return answers


def replicas_in_sync(settings: EnvironmentSettings) -> tuple[int, list[str]]:
    """How many replicas the first Sentinel sees replicating from the master (flags exactly
    ``slave``, master link ``ok``), and a line for each one that is not."""
    _, out, _ = run_in(settings, redis_sentinels(settings)[0], ["sh", f"{SENTINEL_CONF}/cli.sh", "sentinel",
                                                                "replicas", settings.redis.master_name])
    lines, replicas, current = out.splitlines(), [], {}
    for key, value in zip(lines[::2], lines[1::2]):
        if key == "name" and current:
            replicas.append(current)
            current = {}
        current[key] = value
    if current:
        replicas.append(current)
    healthy = [r for r in replicas if r.get("flags") == "slave" and r.get("master-link-status") == "ok"]
    lagging = [f"{r.get('name')}: flags {r.get('flags')}, master link {r.get('master-link-status')}"
               for r in replicas if r not in healthy]
    return len(healthy), lagging


def redis_failover(settings: EnvironmentSettings, timeout_s: float = 60) -> tuple[str, str, float, float]:
    """SENTINEL FAILOVER, then wait until every Sentinel names the new master and every replica
    replicates from it. (old, new, seconds until the Sentinels agreed, seconds until in sync)."""
    if not redis_sentinels(settings):
        raise ShipyardError(f"environment {settings.name}", "has no Sentinels (redis.sentinels is 0)",
                            "set redis.sentinels to 3 to run Redis with automatic failover")
    before = sentinel_masters(settings)[0]
    started = time.monotonic()
    _, reply, err = run_in(settings, redis_sentinels(settings)[0], ["sh", f"{SENTINEL_CONF}/cli.sh", "sentinel",
                                                                    "failover", settings.redis.master_name])
    reply = (reply or err).strip()
    if reply != "OK":
        raise ShipyardError(f"environment {settings.name}, Sentinel {redis_sentinels(settings)[0]}",
                            f"refused the failover: {reply}", "check that the master has a healthy replica")
    new = None
    while new is None and time.monotonic() - started < timeout_s:
        masters = set(sentinel_masters(settings))
        if len(masters) == 1 and before not in masters:
            new, agreed = masters.pop(), time.monotonic() - started
        else:
            time.sleep(0.1)
    if new is None:
        raise ShipyardError(f"environment {settings.name}", f"Sentinels did not agree on a new master within {timeout_s}s",
                            f"look at the Sentinels' logs: make logs ENV={settings.name} SERVICE=redis-sentinel-1")
    # Sentinel turns the old master into a replica only after it has seen it report the wrong
    # role for a while (8 s in Redis 7), and the replica then copies the data set: until then a
    # second failover has no replica to promote.
    while (in_sync := replicas_in_sync(settings))[0] < settings.redis.replicas:
        if time.monotonic() - started > timeout_s:
            raise ShipyardError(f"environment {settings.name}",
                                f"new master {new}, but after {timeout_s}s only {in_sync[0]} of "
                                f"{settings.redis.replicas} replicas replicate from it: {'; '.join(in_sync[1])}",
                                f"look at the replicas' logs: make logs ENV={settings.name} SERVICE=redis")
        time.sleep(0.2)
    return before, new, agreed, time.monotonic() - started
