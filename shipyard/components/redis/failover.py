"""`make redis-failover`: SENTINEL FAILOVER and wait until every Sentinel names the new master."""

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


def redis_failover(settings: EnvironmentSettings, timeout_s: float = 60) -> tuple[str, str, float]:
    """SENTINEL FAILOVER, then wait until every Sentinel names the new master. (old, new, seconds)."""
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
    while time.monotonic() - started < timeout_s:
        masters = set(sentinel_masters(settings))
        if len(masters) == 1 and before not in masters:
            return before, masters.pop(), time.monotonic() - started
        time.sleep(0.1)
    raise ShipyardError(f"environment {settings.name}", f"Sentinels did not agree on a new master within {timeout_s}s",
                        f"look at the Sentinels' logs: make logs ENV={settings.name} SERVICE=redis-sentinel-1")
