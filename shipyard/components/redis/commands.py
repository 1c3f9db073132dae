"""Redis's operator command: `make redis-failover` (the drill is ``failover.py``)."""

from __future__ import annotations

from shipyard.component import Command, CommandContext


def _failover(ctx: CommandContext) -> int:
    from shipyard.components.redis.failover import redis_failover

    old, new, agreed, in_sync = redis_failover(ctx.settings)
    print(f"{ctx.settings.name}: Redis master {old} -> {new}; all Sentinels agree after {agreed:.2f}s; "
          f"every replica replicates from it after {in_sync:.2f}s")
    return 0


COMMANDS = (
    Command("redis-failover", "Sentinel failover drill: SENTINEL FAILOVER, then the seconds until every Sentinel "
            "names the new master and until every replica replicates from it", _failover, changes=True),
)
