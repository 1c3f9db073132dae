"""PostgreSQL's operator commands: `make pg-backup`, `pg-restore`, `pg-promote`, `pg-rebuild`.
The drills behind them are ``backups.py`` and ``promote.py``; each is imported when run."""

from __future__ import annotations

from shipyard.component import Command, CommandContext, Option


def _backup(ctx: CommandContext) -> int:
    from shipyard.components.postgres.backups import pg_backup

    print(pg_backup(ctx.settings, ctx.options["type"]))
    return 0


def _restore(ctx: CommandContext) -> int:
    from shipyard.components.postgres.backups import pg_restore, restore_container

    backup, rows = pg_restore(ctx.settings, ctx.options["backup"], ctx.options["until"])
    name = restore_container(ctx.settings)
    print(f"{ctx.settings.name}: restored {backup} into container {name}: tasks has {rows} rows "
          f"(remove it with: docker rm -f -v {name})")
    return 0


def _refuse_under_patroni(ctx: CommandContext, command: str) -> None:
    """The scripts' promotion and rebuild (docker exec, stopping nodes) would fight Patroni."""
    if ctx.settings.postgres.ha == "patroni":
        from shipyard.errors import ShipyardError

        raise ShipyardError(f"make {command} ENV={ctx.settings.name}",
                            "refused under postgres.ha: patroni: Patroni decides which node leads and rebuilds "
                            "old leaders itself (a switchover / reinit through its REST API is not wired yet)",
                            "let Patroni fail over by itself; for a planned switchover use patronictl inside a node "
                            "(docker exec <postgres container> patronictl -c /var/lib/postgresql/patroni.d switchover)")


def _promote(ctx: CommandContext) -> int:
    from shipyard.components.postgres.promote import check_node, pg_promote

    _refuse_under_patroni(ctx, "pg-promote")
    replica = ctx.options["replica"]
    check_node(ctx.settings, replica)
    # Under the deploy lock: a rollout meanwhile would start the stopped old primary.
    with ctx.lock():
        done = pg_promote(ctx.settings, replica, force=ctx.options["force"])
    without = f" ({done.writes_unavailable_s:.2f}s without a primary)" if done.writes_unavailable_s is not None else ""
    print(f"{ctx.settings.name}: PostgreSQL primary {done.old_primary} -> {done.new_primary}; writes accepted "
          f"{done.promote_s:.2f}s after the promote{without}; {done.old_primary} rebuilt as a replica in "
          f"{done.rebuild_s:.1f}s")
    return 0


def _rebuild(ctx: CommandContext) -> int:
    from shipyard.components.postgres.promote import check_node, pg_rebuild

    _refuse_under_patroni(ctx, "pg-rebuild")
    node = ctx.options["node"]
    check_node(ctx.settings, node)
    with ctx.lock():
        took = pg_rebuild(ctx.settings, node)
    print(f"{ctx.settings.name}: {node} cloned again from the primary and streaming after {took:.1f}s")
    return 0


COMMANDS = (
    Command("pg-backup", "a base backup now (they also run every postgres.backup_interval_s)", _backup,
            (Option("type", "under postgres.ha: patroni, the pgBackRest backup type: full, diff or incr (default: full "
                    "when there is none, else incr)", example="full"),), changes=True),
    Command("pg-restore", "a fresh PostgreSQL from a base backup + the WAL archive (to its end or UNTIL)", _restore,
            (Option("backup", "/backups/base-<time>, under patroni a pgBackRest label (default: the newest)"),
             Option("until", "replay the WAL archive up to this time (default: all of it)",
                    example="'2026-11-24 08:00:00+00'")), changes=True),
    Command("pg-promote", "make a replica the primary (no commit lost; FORCE=1 when the primary is dead: what it "
            "had not sent is lost)", _promote,
            (Option("replica", "the node to promote", required=True, example="postgres-replica-1"),
             Option("force", "promote although no primary answers (commits it had not sent are lost)", flag=True)),
            changes=True),
    Command("pg-rebuild", "wipe a PostgreSQL replica and clone it again from the primary", _rebuild,
            (Option("node", "the replica to clone again", required=True, example="postgres-replica-1"),), changes=True),
)
