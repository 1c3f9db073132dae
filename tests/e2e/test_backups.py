"""Backups: a base backup taken now restores into a fresh PostgreSQL with the same rows."""

import subprocess

import pytest

from shipyard.drills.containers import container_of
from shipyard.drills.pg_backups import remove_restore
from shipyard.inventory import load_environment

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


def primary_count(settings) -> int:
    out = subprocess.run(["docker", "exec", container_of(settings, "postgres"), "bash", "-c",
                          f"PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h 127.0.0.1 "
                          f"-U {settings.postgres.user} -d {settings.postgres.database} -qtAX "
                          f"-c 'SELECT count(*) FROM tasks'"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_backup_restores_into_a_fresh_instance_with_the_same_row_count(env_name, settings):
    for i in range(5):  # rows of our own, so there is something to compare
        subprocess.run(["docker", "exec", container_of(settings, "postgres"), "bash", "-c",
                        f"PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h 127.0.0.1 "
                        f"-U {settings.postgres.user} -d {settings.postgres.database} -qtAX -c "
                        f"\"INSERT INTO tasks (id, tenant, kind, payload, max_attempts, status) VALUES "
                        f"(gen_random_uuid(), 'backup-test', 'checksum', '{{}}', 1, 'cancelled')\""],
                       check=True, capture_output=True)
    rows = primary_count(settings)
    assert rows >= 5
    backup = run_shipyard("pg-backup", "--env", env_name)
    assert backup.returncode == 0 and "complete" in backup.stdout, backup.stdout + backup.stderr
    try:
        restored = run_shipyard("pg-restore", "--env", env_name)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert f"tasks has {rows} rows" in restored.stdout, restored.stdout
    finally:
        remove_restore(settings)


def test_retention_keeps_only_the_newest_backups(env_name, settings):
    for _ in range(settings.postgres.backup_keep + 1):
        assert run_shipyard("pg-backup", "--env", env_name).returncode == 0
    listing = subprocess.run(["docker", "exec", container_of(settings, "postgres-backup"), "sh", "-c",
                              "ls -1d /backups/base-*"], capture_output=True, text=True).stdout.split()
    assert len(listing) == settings.postgres.backup_keep, listing
