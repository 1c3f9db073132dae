"""`make pg-backup` (a backup now) and `make pg-restore` (a fresh server from one), through
pgBackRest on the node Patroni calls leader (files/postgres/pgbackrest-node.py; the repository
is the ``pgbackrest`` volume)."""

from __future__ import annotations

import datetime as dt
import time

import docker.errors

from shipyard import commands
from shipyard.components.postgres import CONF, PGDATA, pgbackrest
from shipyard.components.postgres.instances import node_names
from shipyard.controller.drills import access, container, require_local, run_in
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


_PGBACKREST = ["python3", f"{CONF}/pgbackrest-node.py"]


def leader(settings: EnvironmentSettings) -> str:
    """The node Patroni calls leader (its own REST API, asked inside each node). Every backup
    drill starts here: tried on @local hosts only."""
    require_local(settings)
    answers = []
    for node in node_names(settings):
        try:
            code, out, err = run_in(settings, node, [*_PGBACKREST, "leader"])
        except ShipyardError as exc:  # a node that is not running
            answers.append(f"{node}: {exc}")
            continue
        if code == 0:
            return node
        answers.append((out or err).strip())
    raise ShipyardError(f"environment {settings.name}", "no PostgreSQL node is Patroni's leader: " + "; ".join(answers),
                        f"wait for the failover to finish (make status ENV={settings.name}), then run it again")


def _on_leader(settings: EnvironmentSettings, node: str, args: list[str], what: str) -> str:
    code, out, err = run_in(settings, node, [*_PGBACKREST, *args])
    if code != 0:
        raise ShipyardError(f"environment {settings.name}, node {node}", f"{what} failed: {(err or out)[-800:]}",
                            f"look at the node's log (make logs ENV={settings.name} SERVICE={node}); a failover "
                            "mid-way is retried by running it again")
    return out


def pg_backup(settings: EnvironmentSettings, kind: str | None = None) -> str:
    """One pgBackRest backup on the leader now (``kind`` full, diff or incr; default: full when
    the repository has none, else incr); returns its report line."""
    if kind not in (None, "full", "diff", "incr"):
        raise ShipyardError(f"make pg-backup ENV={settings.name}", f"TYPE {kind!r} is not a backup type",
                            "use TYPE=full, TYPE=diff or TYPE=incr (or none: full when there is none, else incr)")
    node = leader(settings)
    return _on_leader(settings, node, ["backup", *([kind] if kind else [])], "the backup").strip().splitlines()[-1]


def backups(settings: EnvironmentSettings) -> list[str]:
    """The repository's backup labels, oldest first."""
    listed = _on_leader(settings, leader(settings), ["list"], "listing the backups")
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def restore_container(settings: EnvironmentSettings) -> str:
    return f"{settings.compose_project}-pg-restore"


def pg_restore(settings: EnvironmentSettings, backup: str | None = None, until: str | None = None,
               timeout_s: float = 120) -> tuple[str, int]:
    """Start a fresh PostgreSQL (container <project>-pg-restore, own volume, no published port)
    from a pgBackRest backup (default: the newest) plus the WAL archive, replayed to its end or
    to the time ``until``; return (backup, rows in the tasks table once recovery has finished)."""
    if until is not None:
        try:
            dt.datetime.fromisoformat(until)
        except ValueError:
            raise ShipyardError(f"environment {settings.name}", f"UNTIL {until!r} is not a time",
                                "give an ISO time such as '2026-11-24 08:00:00+00:00' (no zone: UTC)") from None
    # Everything committed so far into the archive first (pgbackrest check: a WAL switch,
    # archived), so a restore to the end has it: the archive is per segment, not per record.
    source = leader(settings)
    _on_leader(settings, source, ["flush"], "flushing the WAL archive")
    available = backups(settings)
    if not available:
        raise ShipyardError(f"environment {settings.name}", "has no complete base backup yet",
                            f"take one: make pg-backup ENV={settings.name}")
    chosen = backup or available[-1]
    if chosen not in available:
        raise ShipyardError(f"environment {settings.name}", f"no backup {chosen}",
                            f"pick one of: {', '.join(available)}")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    image = container(settings, source).attrs["Config"]["Image"]
    name = restore_container(settings)
    remove_restore(settings)
    client = access(settings, "postgres").docker
    volumes = {f"{name}-data": {"bind": "/var/lib/postgresql/data", "mode": "rw"},
               f"{project_dir}/postgres": {"bind": CONF, "mode": "ro"},
               f"{project_dir}/secrets/postgres/postgres_password": {"bind": "/run/secrets/postgres_password", "mode": "ro"}}
    # pgbackrest restore into the container's own volume, then PostgreSQL replaying the archive
    # (archive_mode off: it never pushes into the repository it reads).
    argv = [*_PGBACKREST, "restore", "--set", chosen, *(["--until", until] if until else [])]
    volumes[f"{settings.compose_project}_{pgbackrest.VOLUME}"] = {"bind": pgbackrest.REPO_PATH, "mode": "ro"}
    environment = {"PGDATA": PGDATA, "PGBACKREST_CONFIG": f"{CONF}/{pgbackrest.CONFIG_NAME}",
                   "PGBACKREST_STANZA": pgbackrest.stanza(settings.name)}
    try:
        # As root: the script prepares the data directory, then drops to the server's uid.
        restored = client.containers.run(
            image, argv[1:], entrypoint=argv[:1], name=name, user="0", detach=True, environment=environment,
            network=f"{settings.compose_project}_default", labels={"org.shipyard.restore": "1"}, volumes=volumes)
    except docker.errors.DockerException as exc:
        raise ShipyardError(f"environment {settings.name}", f"cannot start the restore container: {exc}",
                            f"remove a leftover one: docker rm -f {name}") from None
    count = [*_PGBACKREST, "count", settings.postgres.user, settings.postgres.database]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # It answers read-only while it still replays the archive: count once recovery is over.
        restored.reload()
        if restored.status == "exited":
            break  # the restore failed: its logs say why
        if restored.status == "running":
            result = restored.exec_run(count, demux=True)
            in_recovery, _, rows = ((result.output or (b"", b""))[0] or b"").decode().strip().partition("|")
            if result.exit_code == 0 and in_recovery == "f" and rows.isdigit():
                return chosen, int(rows)
        time.sleep(0.5)
    logs = restored.logs(tail=20).decode(errors="replace")
    raise ShipyardError(f"environment {settings.name}, container {name}",
                        f"the restored server did not answer ({restored.status}, waited up to {timeout_s}s):\n{logs}",
                        "look at the logs above; the backup may be incomplete")


def remove_restore(settings: EnvironmentSettings) -> None:
    client = access(settings, "postgres").docker
    name = restore_container(settings)
    try:
        client.containers.get(name).remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
    try:
        client.volumes.get(f"{name}-data").remove(force=True)
    except docker.errors.NotFound:
        pass
