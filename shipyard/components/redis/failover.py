"""`make redis-failover`: SENTINEL FAILOVER and wait until every Sentinel names the new master."""

from __future__ import annotations

import time

from shipyard.drills.containers import container_of, run
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings
from shipyard.components.redis import sentinel_names as redis_sentinels


def sentinel_masters(settings: EnvironmentSettings) -> list[str]:
    """What each Sentinel names as the master now (host:port)."""
    answers = []
    for sentinel in redis_sentinels(settings):
        out = run(["docker", "exec", container_of(settings, sentinel), "redis-cli", "-p", "26379",
                   "sentinel", "get-master-addr-by-name", settings.redis.master_name]).split()
        answers.append(":".join(out[:2]))
    return answers


def redis_failover(settings: EnvironmentSettings, timeout_s: float = 60) -> tuple[str, str, float]:
    """SENTINEL FAILOVER, then wait until every Sentinel names the new master. (old, new, seconds)."""
    if not redis_sentinels(settings):
        raise ShipyardError(f"environment {settings.name}", "has no Sentinels (redis.sentinels is 0)",
                            "set redis.sentinels to 3 to run Redis with automatic failover")
    before = sentinel_masters(settings)[0]
    started = time.monotonic()
    reply = run(["docker", "exec", container_of(settings, redis_sentinels(settings)[0]), "redis-cli", "-p",
                  "26379", "sentinel", "failover", settings.redis.master_name])
    if reply != "OK":
        raise ShipyardError(f"environment {settings.name}, Sentinel {redis_sentinels(settings)[0]}",
                            f"refused the failover: {reply}", "check that the master has a healthy replica")
    while time.monotonic() - started < timeout_s:
        masters = set(sentinel_masters(settings))
        if len(masters) == 1 and before not in masters:
            return before, masters.pop(), time.monotonic() - started
        time.sleep(0.1)
    raise ShipyardError(f"environment {settings.name}", f"Sentinels did not agree on a new master within {timeout_s}s",
                        "look at the Sentinels' logs: docker logs <project>-redis-sentinel-1-1")
