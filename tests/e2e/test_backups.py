"""Backups (pgBackRest from the leader): a backup plus the WAL archive restores into a fresh
PostgreSQL with the same rows, including those committed after the backup; UNTIL stops the
replay at a time; a backup from before a failover (the leader's container killed) restores what
the new leader committed after it."""

import subprocess
import time

import pytest

from shipyard.controller.drills import container_of
from shipyard.components.postgres.backups import remove_restore
from shipyard.components.postgres.instances import node_names as postgres_nodes
from shipyard.components.postgres.roles import primary_of
from shipyard.errors import ShipyardError
from shipyard.inventory import load_environment

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


def on_primary(settings, sql: str) -> str:
    out = subprocess.run(["docker", "exec", container_of(settings, primary_of(settings)), "bash", "-c",
                          f"PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h 127.0.0.1 "
                          f"-U {settings.postgres.user} -d {settings.postgres.database} -qtAX -v ON_ERROR_STOP=1 "
                          f"-c \"{sql}\""], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def add_rows(settings, count: int) -> int:
    """``count`` rows of our own (cancelled tasks: no worker touches them); the new total."""
    on_primary(settings, f"INSERT INTO tasks (id, tenant, kind, payload, max_attempts, status) "
                         f"SELECT gen_random_uuid(), 'backup-test', 'checksum', '{{}}', 1, 'cancelled' "
                         f"FROM generate_series(1, {count})")
    return int(on_primary(settings, "SELECT count(*) FROM tasks"))


def restored_rows(env_name, settings, *extra: str) -> int:
    try:
        restored = run_shipyard("pg-restore", "--env", env_name, *extra)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        return int(restored.stdout.split("tasks has ")[1].split()[0])
    finally:
        remove_restore(settings)


def test_backup_restores_into_a_fresh_instance_with_the_same_row_count(env_name, settings):
    rows = add_rows(settings, 5)
    backup = run_shipyard("pg-backup", "--env", env_name)
    assert backup.returncode == 0 and "complete" in backup.stdout, backup.stdout + backup.stderr
    assert restored_rows(env_name, settings) == rows


def test_a_completed_backup_is_the_age_every_nodes_exporter_reports(env_name, settings):
    """PostgresBaseBackupTooOld reads pg_base_backup_last_success_timestamp_seconds: the leader
    records each completed backup, and it reaches Prometheus from every node's exporter."""
    import requests

    from shipyard import topology
    from tests.waiting import wait_for

    topo = topology.build(settings)
    bind, port = topo.binding(topo.instances_of("prometheus", "prometheus")[0])
    before = time.time()
    assert run_shipyard("pg-backup", "--env", env_name).returncode == 0

    def reported() -> set[str]:
        answer = requests.get(f"http://{bind}:{port}/api/v1/query", timeout=5, params={
            "query": f"pg_base_backup_last_success_timestamp_seconds >= {before - 1:.0f}"})
        return {r["metric"]["node"] for r in answer.json()["data"]["result"]}

    nodes = set(postgres_nodes(settings))
    wait_for(f"the backup's time reported by the exporters of {sorted(nodes)}", lambda: reported() >= nodes,
             6 * settings.prometheus.scrape_interval_s + 10)


def test_commits_after_the_base_backup_come_back_from_the_wal_archive(env_name, settings):
    assert run_shipyard("pg-backup", "--env", env_name).returncode == 0
    rows = add_rows(settings, 7)  # only in the WAL archive (pg-restore switches the segment first)
    assert restored_rows(env_name, settings) == rows


def test_until_stops_the_replay_at_a_time(env_name, settings):
    assert run_shipyard("pg-backup", "--env", env_name).returncode == 0
    rows_then = add_rows(settings, 3)
    then = on_primary(settings, "SELECT clock_timestamp()")
    time.sleep(1.5)
    rows_now = add_rows(settings, 4)
    assert rows_now == rows_then + 4
    assert restored_rows(env_name, settings, "--until", then) == rows_then


def test_a_bad_until_is_refused_before_anything_starts(env_name, settings):
    bad = run_shipyard("pg-restore", "--env", env_name, "--until", "yesterday-ish")
    assert bad.returncode == 2 and "UNTIL 'yesterday-ish' is not a time" in bad.stderr


def test_retention_keeps_postgres_backup_keep_full_backups(env_name, settings):
    """pgBackRest's repo1-retention-full: postgres.backup_keep full backups, older ones expired."""
    from shipyard.components.postgres import CONF
    from shipyard.components.postgres.backups import leader

    for _ in range(settings.postgres.backup_keep + 1):
        taken = run_shipyard("pg-backup", "--env", env_name, "--type", "full")
        assert taken.returncode == 0, taken.stdout + taken.stderr
    listing = subprocess.run(["docker", "exec", container_of(settings, leader(settings)), "python3",
                              f"{CONF}/pgbackrest-node.py", "list"], capture_output=True, text=True, check=True).stdout
    fulls = [line for line in listing.splitlines() if line.split()[1:2] == ["full"]]
    assert len(fulls) == settings.postgres.backup_keep, listing


def test_a_backup_from_before_a_failover_restores_what_the_new_leader_committed(env_name, settings):
    from shipyard.components.postgres.backups import leader
    from tests.waiting import wait_for

    backup = run_shipyard("pg-backup", "--env", env_name)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    name = backup.stdout.split("backup ")[1].split()[0]
    old = leader(settings)
    old_container = container_of(settings, old)
    # A dead host: killed, not restarted by its restart policy until started again below.
    subprocess.run(["docker", "kill", "--signal", "KILL", old_container], check=True, capture_output=True)
    try:
        def new_leader():
            try:
                node = leader(settings)
            except Exception:  # no leader yet: the failover takes about ttl_s
                return None
            return node if node != old else None

        wait_for("a new leader", new_leader, settings.postgres.patroni.ttl_s + 30, interval_s=0.5)
        # Patroni takes the leader key before PostgreSQL leaves recovery: until then no node
        # reports itself primary, and the write is tried again.
        rows = wait_for("a write on the new leader", lambda: _try_add_rows(settings, 6), 30, interval_s=0.5)
        assert restored_rows(env_name, settings, "--backup", name) == rows
    finally:
        subprocess.run(["docker", "start", old_container], check=True, capture_output=True)


def _try_add_rows(settings, count: int):
    """The new total, or None while no node is primary yet or the write fails (mid-promotion)."""
    try:
        return add_rows(settings, count)
    except (subprocess.CalledProcessError, ShipyardError):
        return None
