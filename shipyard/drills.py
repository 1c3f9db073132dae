"""Operator drills on @local environments: `make redis-failover`. Side effects (docker CLI);
the argv come from shipyard.commands."""

from __future__ import annotations

import subprocess
import time

from shipyard import commands
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings
from shipyard.topology import redis_sentinels


def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30).stdout.strip()


def container_of(settings: EnvironmentSettings, service: str) -> str:
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    container = _run(commands.compose(project_dir, settings.compose_project, "ps", "-q", service))
    if not container:
        raise ShipyardError(f"environment {settings.name}, service {service}", "no running container",
                            f"roll the environment out first: make up ENV={settings.name}")
    return container


def sentinel_masters(settings: EnvironmentSettings) -> list[str]:
    """What each Sentinel names as the master now (host:port)."""
    answers = []
    for sentinel in redis_sentinels(settings):
        out = _run(["docker", "exec", container_of(settings, sentinel), "redis-cli", "-p", "26379",
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
    reply = _run(["docker", "exec", container_of(settings, redis_sentinels(settings)[0]), "redis-cli", "-p",
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


def pg_backup(settings: EnvironmentSettings) -> str:
    """One base backup now, by the backup service; returns its report line."""
    out = subprocess.run(["docker", "exec", container_of(settings, "postgres-backup"), "bash",
                          "/etc/postgresql/shipyard/backup.sh", "now"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise ShipyardError(f"environment {settings.name}, service postgres-backup", f"backup failed: {out.stderr[-500:]}",
                            "check that the primary is healthy and the replication role exists")
    return out.stdout.strip().splitlines()[-1]


def backups(settings: EnvironmentSettings) -> list[str]:
    listing = _run(["docker", "exec", container_of(settings, "postgres-backup"), "sh", "-c",
                    "ls -1d /backups/base-* 2>/dev/null | grep -v '[.]partial$' | sort"])
    return listing.split()


def restore_container(settings: EnvironmentSettings) -> str:
    return f"{settings.compose_project}-pg-restore"


def pg_restore(settings: EnvironmentSettings, backup: str | None = None, timeout_s: float = 120) -> tuple[str, int]:
    """Start a fresh PostgreSQL (container <project>-pg-restore, own volume, no published port)
    from a base backup (default: the newest) and return (backup, rows in the tasks table)."""
    available = backups(settings)
    if not available:
        raise ShipyardError(f"environment {settings.name}", "has no complete base backup yet",
                            f"take one: make pg-backup ENV={settings.name}")
    chosen = backup or available[-1]
    if chosen not in available:
        raise ShipyardError(f"environment {settings.name}", f"no backup {chosen}",
                            f"pick one of: {', '.join(available)}")
    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    image = _run(["docker", "inspect", "--format", "{{.Config.Image}}", container_of(settings, "postgres")])
    name = restore_container(settings)
    remove_restore(settings)
    started = subprocess.run(commands.docker_run_restore(
        name=name, image=image, network=f"{settings.compose_project}_default",
        volumes=[f"{settings.compose_project}_pgbackups:/backups:ro", f"{name}-data:/var/lib/postgresql/data",
                 f"{project_dir}/postgres:/etc/postgresql/shipyard:ro",
                 f"{project_dir}/secrets/postgres/postgres_password:/run/secrets/postgres_password:ro"],
        command=["bash", "/etc/postgresql/shipyard/restore.sh", chosen]), capture_output=True, text=True)
    if started.returncode != 0:
        raise ShipyardError(f"environment {settings.name}", f"cannot start the restore container: {started.stderr}",
                            f"remove a leftover one: docker rm -f {name}")
    count_sql = ["docker", "exec", name, "bash", "-c",
                 f"PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h 127.0.0.1 -U {settings.postgres.user} "
                 f"-d {settings.postgres.database} -qtAX -c 'SELECT count(*) FROM tasks'"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = subprocess.run(count_sql, capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return chosen, int(result.stdout.strip())
        time.sleep(0.5)
    logs = _run(["docker", "logs", "--tail", "20", name])
    raise ShipyardError(f"environment {settings.name}, container {name}",
                        f"the restored server did not answer within {timeout_s}s:\n{logs}",
                        "look at the logs above; the backup may be incomplete")


def remove_restore(settings: EnvironmentSettings) -> None:
    name = restore_container(settings)
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
    subprocess.run(["docker", "volume", "rm", "-f", f"{name}-data"], capture_output=True)
