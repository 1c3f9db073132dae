"""`make pg-backup` (a base backup now) and `make pg-restore` (a fresh server from one)."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

from shipyard import commands
from shipyard.drills.containers import container_of, run
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings


def pg_backup(settings: EnvironmentSettings) -> str:
    """One base backup now, by the backup service; returns its report line."""
    out = subprocess.run(["docker", "exec", container_of(settings, "postgres-backup"), "bash",
                          "/etc/postgresql/shipyard/backup.sh", "now"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise ShipyardError(f"environment {settings.name}, service postgres-backup", f"backup failed: {out.stderr[-500:]}",
                            "check that the primary is healthy and the replication role exists")
    return out.stdout.strip().splitlines()[-1]


def backups(settings: EnvironmentSettings) -> list[str]:
    listing = run(["docker", "exec", container_of(settings, "postgres-backup"), "sh", "-c",
                    "ls -1d /backups/base-* 2>/dev/null | grep -v '[.]partial$' | sort"])
    return listing.split()


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
    image = run(["docker", "inspect", "--format", "{{.Config.Image}}", container_of(settings, "postgres")])
    name = restore_container(settings)
    remove_restore(settings)
    started = subprocess.run(commands.docker_run_restore(
        name=name, image=image, network=f"{settings.compose_project}_default",
        volumes=[f"{settings.compose_project}_pgbackups:/backups:ro", f"{name}-data:/var/lib/postgresql/data",
                 f"{project_dir}/postgres:/etc/postgresql/shipyard:ro",
                 f"{project_dir}/secrets/postgres/postgres_password:/run/secrets/postgres_password:ro"],
        command=["bash", "/etc/postgresql/shipyard/restore.sh", chosen, *([until] if until else [])]),
        capture_output=True, text=True)
    if started.returncode != 0:
        raise ShipyardError(f"environment {settings.name}", f"cannot start the restore container: {started.stderr}",
                            f"remove a leftover one: docker rm -f {name}")
    count_sql = ["docker", "exec", name, "bash", "-c",
                 f"PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h 127.0.0.1 -U {settings.postgres.user} "
                 f"-d {settings.postgres.database} -qtAX -c 'SELECT pg_is_in_recovery(), count(*) FROM tasks'"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # It answers read-only while it still replays the archive: count once recovery is over.
        result = subprocess.run(count_sql, capture_output=True, text=True)
        in_recovery, _, rows = result.stdout.strip().partition("|")
        if result.returncode == 0 and in_recovery == "f" and rows.isdigit():
            return chosen, int(rows)
        time.sleep(0.5)
    logs = run(["docker", "logs", "--tail", "20", name])
    raise ShipyardError(f"environment {settings.name}, container {name}",
                        f"the restored server did not answer within {timeout_s}s:\n{logs}",
                        "look at the logs above; the backup may be incomplete")


def remove_restore(settings: EnvironmentSettings) -> None:
    name = restore_container(settings)
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", f"{name}-data"], capture_output=True)
