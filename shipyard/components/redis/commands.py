"""Redis's operator command: `make redis-failover` (the drill is ``failover.py``)."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def _failover(ctx: CommandContext) -> int:
    from shipyard.components.redis.failover import redis_failover

    old, new, took = redis_failover(ctx.settings)
    print(f"{ctx.settings.name}: Redis master {old} -> {new}; all Sentinels agree after {took:.2f}s")
    return 0


COMMANDS = (
    Command("redis-failover", "Sentinel failover drill: SENTINEL FAILOVER, then the seconds until every Sentinel "
            "names the new master", _failover),
)
