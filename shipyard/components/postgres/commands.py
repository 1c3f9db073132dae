"""PostgreSQL's operator commands: `make pg-backup`, `pg-restore`, `pg-promote`, `pg-rebuild`,
`pg-restart`, and the deploy's live step (``reconcile``, ``plan_config``). Behind them:
``patroni_api.py`` (Patroni's REST API, decisions in ``patroni_decide.py``) and ``backups.py``
(pgBackRest); each is imported when run."""

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


def _patroni(settings, changes: bool = True):
    """The environment's Patroni cluster, each node's REST API reached by docker exec."""
    from shipyard.components.postgres.instances import node_names
    from shipyard.components.postgres.patroni_api import Cluster
    from shipyard.components.postgres.patroni_docker import DockerTransport

    return Cluster(settings.name, node_names(settings), DockerTransport(settings, changes=changes),
                   settings.postgres.patroni.maximum_lag_on_failover_mb * 1024 * 1024)


def desired_config(settings) -> dict:
    """The dynamic configuration the settings want: ``bootstrap.dcs`` of the patroni.yml a deploy
    renders (patroni_decide.desired_config)."""
    from shipyard.components.postgres import COMPONENT
    from shipyard.components.postgres.patroni_decide import desired_config as from_yaml
    from shipyard.render import render_config_dir

    host = settings.hosts_with_role("data")[0]
    return from_yaml(render_config_dir(settings, host, COMPONENT, "postgres")["postgres/patroni.yml"].decode())


def reconcile(ctx: CommandContext) -> list[str]:
    """The deploy's live step, once every node converged: the cluster's
    dynamic configuration made what the settings say (PATCH /config), then the restarts a
    postmaster parameter needs, node by node (Component.live_setup)."""
    return _patroni(ctx.settings).reconcile(desired_config(ctx.settings))


def reconcile_ahead(settings) -> None:
    """Before ``reconcile``'s turn (LiveSetup.ahead): its clients imported, and an SSH tunnel open
    to the engine of each host with a node (made once a process: shipyard.controller.ssh), the
    handshake it would otherwise wait for."""
    from shipyard import topology
    from shipyard.components.postgres import patroni_api, patroni_docker  # noqa: F401
    from shipyard.components.postgres.instances import node_names
    from shipyard.controller.ssh import engine_tunnel

    topo = topology.build(settings)
    hosts = {topo.find(node).host.name: topo.find(node).host for node in node_names(settings)}
    for host in hosts.values():
        if host.connect != "@local":
            engine_tunnel(host)


def plan_config(settings) -> list[str]:
    """`make plan`: how the running cluster's dynamic configuration differs from the settings',
    and which changes apply live or need a restart (read-only)."""
    from shipyard.components.postgres import patroni_decide

    cluster = _patroni(settings, changes=False)
    return patroni_decide.plan_lines(patroni_decide.config_changes(desired_config(settings), cluster.config(),
                                                                   cluster.contexts()))


def _promote(ctx: CommandContext) -> int:
    from shipyard.components.postgres.roles import check_node

    settings = ctx.settings
    node = ctx.options.get("to") or ctx.options.get("replica")
    if node:
        check_node(settings, node)
    with ctx.lock():  # a deploy's reconcile restarts nodes: not beside a switchover
        done = _patroni(settings).switch_over(node, force=ctx.options["force"])
    streaming = (f"; {done.old} streams from it {done.streaming_s:.2f}s after the request"
                 if done.streaming_s is not None else "")
    print(f"{settings.name}: Patroni {done.action} {done.old or '(no leader)'} -> {done.new}: Patroni answered "
          f"after {done.answered_s:.2f}s, {done.new} out of recovery {done.writable_s:.2f}s after the request"
          f"{streaming}")
    return 0


def _rebuild(ctx: CommandContext) -> int:
    from shipyard.components.postgres.roles import check_node

    node = ctx.options["node"]
    check_node(ctx.settings, node)
    with ctx.lock():
        took = _patroni(ctx.settings).reinitialize(node)
    print(f"{ctx.settings.name}: {node} reinitialised by Patroni (wiped, cloned from the leader) and streaming "
          f"after {took:.1f}s")
    return 0


def _restart(ctx: CommandContext) -> int:
    cluster = _patroni(ctx.settings)
    with ctx.lock():
        pending = cluster.pending()
        done = cluster.restart_pending() if pending else []
    print(f"{ctx.settings.name}: " + ("; ".join(done) if done else "no node has a pending restart"))
    return 0


COMMANDS = (
    Command("pg-backup", "a pgBackRest backup on the leader now (they also run every postgres.backup_interval_s)",
            _backup,
            (Option("type", "the backup type: full, diff or incr (default: full when there is none, else incr)",
                    example="full"),), changes=True),
    Command("pg-restore", "a fresh PostgreSQL from a backup + the WAL archive (to its end or UNTIL)", _restore,
            (Option("backup", "a pgBackRest backup label (default: the newest)"),
             Option("until", "replay the WAL archive up to this time (default: all of it)",
                    example="'2026-11-24 08:00:00+00'")), changes=True),
    Command("pg-promote", "a Patroni switchover to a replica (no commit lost; FORCE=1 when the leader is dead: a "
            "failover, what it had not sent is lost)", _promote,
            (Option("to", "the node to promote (default: the sync standby, else the least lag)",
                    example="postgres-replica-1"),
             Option("replica", "the same as TO (its older name)", example="postgres-replica-1"),
             Option("force", "fail over although the leader does not answer (commits it had not sent are lost)",
                    flag=True)),
            changes=True),
    Command("pg-rebuild", "wipe a PostgreSQL replica and clone it again from the leader (Patroni's reinit)", _rebuild,
            (Option("node", "the replica to clone again", required=True, example="postgres-replica-1"),), changes=True),
    Command("pg-restart", "restart the PostgreSQL nodes Patroni says need it (a postmaster parameter changed): "
            "replicas first, the leader by a switchover", _restart, changes=True),
)
