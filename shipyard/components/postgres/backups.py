"""`make pg-backup` (a base backup now) and `make pg-restore` (a fresh server from one)."""

from __future__ import annotations

import datetime as dt
import time

import docker.errors

from shipyard import commands
from shipyard.components.postgres import CONF
from shipyard.controller.drills import access, container, run_in
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


def pg_backup(settings: EnvironmentSettings) -> str:
    """One base backup now, by the backup service; returns its report line."""
    code, out, err = run_in(settings, "postgres-backup", ["bash", f"{CONF}/backup.sh", "now"])
    if code != 0:
        raise ShipyardError(f"environment {settings.name}, service postgres-backup", f"backup failed: {err[-500:]}",
                            "check that the primary is healthy and the replication role exists")
    return out.strip().splitlines()[-1]


def backups(settings: EnvironmentSettings) -> list[str]:
    code, out, err = run_in(settings, "postgres-backup", ["bash", f"{CONF}/backup.sh", "list"])
    if code != 0:
        raise ShipyardError(f"environment {settings.name}, service postgres-backup", f"cannot list backups: {err[-300:]}",
                            "check the backup service: make logs ENV=.. SERVICE=postgres-backup")
    return out.split()


def restore_container(settings: EnvironmentSettings) -> str:
    return f"{settings.compose_project}-pg-restore"


def pg_restore(settings: EnvironmentSettings, backup: str | None = None, until: str | None = None,
               timeout_s: float = 120) -> tuple[str, int]:
    """Start a fresh PostgreSQL (container <project>-pg-restore, own volume, no published port)
    from a base backup (default: the newest) plus the WAL archive, replayed to its end or to
    the time ``until``; return (backup, rows in the tasks table once recovery has finished)."""
    if until is not None:
        try:
            dt.datetime.fromisoformat(until)
        except ValueError:
            raise ShipyardError(f"environment {settings.name}", f"UNTIL {until!r} is not a time",
                                "give an ISO time such as '2026-11-24 08:00:00+00:00' (no zone: UTC)") from None
    available = backups(settings)
    if not available:
        raise ShipyardError(f"environment {settings.name}", "has no complete base backup yet",
                            f"take one: make pg-backup ENV={settings.name}")
    chosen = backup or available[-1]
    if chosen not in available:
        raise ShipyardError(f"environment {settings.name}", f"no backup {chosen}",
                            f"pick one of: {', '.join(available)}")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    image = container(settings, "postgres").attrs["Config"]["Image"]
    name = restore_container(settings)
    remove_restore(settings)
    client = access(settings, "postgres").docker
    argv = ["bash", f"{CONF}/restore.sh", chosen, *([until] if until else [])]
    try:
        # As root: restore.sh unpacks the backup, then drops to the server's uid.
        restored = client.containers.run(
            image, argv[1:], entrypoint=argv[:1], name=name, user="0", detach=True,
            network=f"{settings.compose_project}_default", labels={"org.shipyard.restore": "1"},
            volumes={f"{settings.compose_project}_pgbackups": {"bind": "/backups", "mode": "ro"},
                     f"{name}-data": {"bind": "/var/lib/postgresql/data", "mode": "rw"},
                     f"{project_dir}/postgres": {"bind": CONF, "mode": "ro"},
                     f"{project_dir}/secrets/postgres/postgres_password":
                         {"bind": "/run/secrets/postgres_password", "mode": "ro"}})
    except docker.errors.DockerException as exc:
        raise ShipyardError(f"environment {settings.name}", f"cannot start the restore container: {exc}",
                            f"remove a leftover one: docker rm -f {name}") from None
    count = ["bash", f"{CONF}/restore.sh", "count", settings.postgres.user, settings.postgres.database]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # It answers read-only while it still replays the archive: count once recovery is over.
        restored.reload()
        if restored.status == "exited":
            break  # restore.sh failed: its logs say why
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
