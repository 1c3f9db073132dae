"""pgBackRest following Patroni's leader, on the real cluster of conftest (three Patroni nodes,
synchronous mode, one repository directory they all share), through the component's own
files/postgres/pgbackrest-node.py — what `make pg-backup`, `make pg-restore` and each node's
backup loop run in a deploy:

the stanza made; a full backup from the leader (a replica refuses); a batch of rows; the leader
killed, a new one elected; a second batch; an incremental backup from the *new* leader into the
same repository; a third batch; then restores into fresh data directories, each a real
PostgreSQL replaying the archive: the newest backup to the end has every acknowledged row, the
full backup from *before* the failover to the end has them too (its WAL and the new timeline's
from one archive), and to a time between the first two batches exactly the first batch.

The tests run in order and share the cluster (test_failover.py ran on it before)."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from shipyard.components import postgres as component
from tests.patroni.test_failover import _connect, _primary, _streaming
from tests.waiting import wait_for

SCRIPT = component.COMPONENT.files_dir / "postgres" / "pgbackrest-node.py"
# Debian's python3, as in the image (the script, run as root, becomes postgres: a python under
# /root would no longer read its own library).
PYTHON = "/usr/bin/python3"
BATCH = 100  # rows per batch, each its own acknowledged transaction
STATE: dict = {}
FIGURES: dict = {}


def run_script(node, *args: str, as_root: bool = False, **env: str) -> subprocess.CompletedProcess:
    """pgbackrest-node.py in ``node``'s environment, as postgres (the backup loop), or as root
    (``docker exec``: `make pg-backup`; the script becomes postgres itself)."""
    user = pwd.getpwnam("postgres" if not as_root else "root")
    return subprocess.run([PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          env={**node.environment(), "PG_SUPERUSER": STATE["settings"].postgres.user,
                               "PG_DATABASE": "postgres", **env})


def insert_batch(node, batch: int, settings, secret_values) -> None:
    with _connect(node, settings, secret_values) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS backed_up (id int PRIMARY KEY, batch int NOT NULL)")
        for i in range(batch * BATCH, (batch + 1) * BATCH):
            conn.execute("INSERT INTO backed_up VALUES (%s, %s)", (i, batch))  # acknowledged by the sync standby


def server_now(node, settings, secret_values) -> str:
    with _connect(node, settings, secret_values) as conn:
        return conn.execute("SELECT clock_timestamp()::text").fetchone()[0]


def restore(workdir: Path, name: str, leader, settings, secret_values, *args: str) -> tuple[dict[int, int], float]:
    """A fresh PostgreSQL from the repository (pgbackrest-node.py restore ``args``) in its own
    directory and port; once recovery is over: batch → rows, and the seconds it took."""
    from tests.patroni.conftest import _owned_by_postgres, free_port

    root = workdir / f"restore-{name}"
    root.mkdir()
    _owned_by_postgres(root, 0o700)
    port = free_port()
    user = pwd.getpwnam("postgres")
    log = root / "restore.log"
    # The restored postgresql.conf is the leader's (Patroni's): its port and socket are moved here.
    argv = [PYTHON, str(SCRIPT), "restore", *args, "-c", f"port={port}", "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={root}"]
    env = {**leader.environment(), "PGDATA": str(root / "data")}
    del env["PG_SUPERUSER_PASSFILE"]  # as in the restore container: a restore needs no password
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   user=user.pw_uid, group=user.pw_gid, extra_groups=[], env=env)

    def counted():
        if process.poll() is not None:
            raise AssertionError(f"restore {name} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user=settings.postgres.user, dbname="postgres",
                                 password=secret_values["postgres_password"], connect_timeout=2) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return None
                return dict(conn.execute("SELECT batch, count(*) FROM backed_up GROUP BY batch").fetchall()) or {-1: 0}
        except psycopg.OperationalError:
            return None

    try:
        rows = wait_for(f"restore {name} open for writes", counted, 120, interval_s=0.2)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        text = log.read_text(errors="replace")
    leaks = [k for k, v in secret_values.items() if v in text]
    assert not leaks, f"restore log of {name} holds {leaks}"
    shutil.rmtree(root, ignore_errors=True)
    return {b: n for b, n in rows.items() if b >= 0}, took


def test_the_stanza_is_made_and_a_full_backup_taken_from_the_leader_only(cluster, settings, secret_values, capsys):
    STATE["settings"] = settings
    leader = wait_for("a leader", lambda: _primary(cluster), 120)
    others = [n for n in cluster if n is not leader]
    for node in others:  # test_failover.py restarted the node it killed
        if node.process.poll() is not None:
            node.start()
    wait_for("both replicas streaming", lambda: _streaming(leader, [n.name for n in others], settings, secret_values,
                                                           synchronous=1), 120)
    made = run_script(leader, "stanza")
    assert made.returncode == 0 and "ready" in made.stdout, made.stdout + made.stderr
    # Idempotent: a second time changes nothing and succeeds.
    assert run_script(leader, "stanza").returncode == 0
    refused = run_script(others[0], "backup")
    assert refused.returncode == 1 and f"{others[0].name}: not the leader" in refused.stderr, refused.stderr
    started = time.monotonic()
    taken = run_script(leader, "backup")
    FIGURES["full_s"] = time.monotonic() - started
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "(full) of " + leader.name in taken.stdout, taken.stdout
    listed = run_script(leader, "list").stdout.split("\n")
    assert [line.split()[1] for line in listed if line] == ["full"], listed
    STATE["full"] = listed[0].split()[0]
    with capsys.disabled():
        print(f"\npgbackrest: {taken.stdout.strip()} (the command took {FIGURES['full_s']:.1f} s)")


def test_an_incremental_backup_from_the_new_leader_after_a_failover(cluster, settings, secret_values, workdir, capsys):
    if "full" not in STATE:
        pytest.fail("no full backup: the test before failed")
    leader = _primary(cluster)
    insert_batch(leader, 0, settings, secret_values)
    STATE["between_0_1"] = server_now(leader, settings, secret_values)
    old_timeline = leader.get("/patroni")[1]["timeline"]
    leader.kill()
    survivors = [n for n in cluster if n is not leader]
    new = wait_for("a new leader", lambda: _primary(survivors), 60, interval_s=0.1)
    wait_for(f"{new.name} accepts writes", lambda: _writable(new, settings, secret_values), 30, interval_s=0.1)
    insert_batch(new, 1, settings, secret_values)
    started = time.monotonic()
    taken = run_script(new, "backup")
    FIGURES["incr_s"] = time.monotonic() - started
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert f"(incr) of {new.name}" in taken.stdout, taken.stdout
    STATE["between_1_2"] = server_now(new, settings, secret_values)
    insert_batch(new, 2, settings, secret_values)
    STATE["leader"] = new
    # One archive across the switch: the new timeline's history file is in the repository, and
    # pgBackRest's own check (a WAL switch, archived within archive-timeout) passes on the new leader.
    flushed = run_script(new, "flush")
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    new_timeline = new.get("/patroni")[1]["timeline"]
    assert new_timeline > old_timeline
    archive = workdir / "pgbackrest-repo" / "archive" / new.stanza
    assert list(archive.glob(f"*/{new_timeline:08X}.history")), sorted(p.name for p in archive.rglob("*"))[-20:]
    STATE["killed"] = leader
    with capsys.disabled():
        print(f"pgbackrest: after the kill of {leader.name}: {taken.stdout.strip()} "
              f"(timeline {old_timeline} -> {new_timeline}; the command took {FIGURES['incr_s']:.1f} s)")


def _writable(node, settings, secret_values) -> bool:
    try:
        with _connect(node, settings, secret_values) as conn:
            conn.execute("SELECT pg_current_xact_id()")
        return True
    except (psycopg.errors.ReadOnlySqlTransaction, psycopg.OperationalError):
        return False


@pytest.mark.parametrize("case", ["newest-to-end", "before-failover-to-end", "before-failover-until-batch-0",
                                  "newest-until-batch-1"])
def test_a_restore_has_exactly_the_rows_acknowledged_up_to_its_target(case, cluster, settings, secret_values, workdir,
                                                                      capsys):
    if "leader" not in STATE:
        pytest.fail("no failover with backups: the test before failed")
    leader = STATE["leader"]
    # What `make pg-restore` does first: everything committed so far into the archive.
    assert run_script(leader, "flush").returncode == 0
    full = ["--set", STATE["full"]]
    args, expected = {
        "newest-to-end": ([], {0: BATCH, 1: BATCH, 2: BATCH}),
        # The backup from before the failover, replayed through both timelines.
        "before-failover-to-end": (full, {0: BATCH, 1: BATCH, 2: BATCH}),
        # Across the failover: the target lies on the old timeline, before the kill.
        "before-failover-until-batch-0": (full + ["--until", STATE["between_0_1"]], {0: BATCH}),
        "newest-until-batch-1": (["--until", STATE["between_1_2"]], {0: BATCH, 1: BATCH}),
    }[case]
    rows, took = restore(workdir, case, leader, settings, secret_values, *args)
    FIGURES.setdefault("restore_s", {})[case] = took
    with capsys.disabled():
        print(f"pgbackrest restore {case}: rows per batch {rows} in {took:.1f} s (start to open for writes)")
    assert rows == expected


def test_the_schedule_backs_up_on_the_leader_only_when_due(cluster, settings, secret_values):
    if "leader" not in STATE:
        pytest.fail("no failover with backups: the tests before failed")
    leader = STATE["leader"]
    replicas = [n for n in cluster if n is not leader and n.process.poll() is None]
    # Due on every node (an interval of 0 s: whatever the newest backup's age), but only the leader acts.
    for node in replicas:
        looked = run_script(node, "tick", PG_BACKUP_INTERVAL_S="0", PG_BACKUP_FULL_INTERVAL_S="604800")
        assert looked.returncode == 0 and "no backup due (or not the leader)" in looked.stdout, looked.stderr
    before = len([line for line in run_script(leader, "list").stdout.splitlines() if line])
    not_due = run_script(leader, "tick", PG_BACKUP_INTERVAL_S="3600", PG_BACKUP_FULL_INTERVAL_S="604800")
    assert not_due.returncode == 0 and "no backup due" in not_due.stdout, not_due.stderr
    due = run_script(leader, "tick", PG_BACKUP_INTERVAL_S="0", PG_BACKUP_FULL_INTERVAL_S="604800", as_root=True)
    assert due.returncode == 0 and f"(incr) of {leader.name}" in due.stdout, due.stdout + due.stderr
    full_due = run_script(leader, "tick", PG_BACKUP_INTERVAL_S="0", PG_BACKUP_FULL_INTERVAL_S="0")
    assert full_due.returncode == 0 and f"(full) of {leader.name}" in full_due.stdout, full_due.stdout + full_due.stderr
    after = run_script(leader, "list").stdout.splitlines()
    assert len([line for line in after if line]) == before + 2, after
    # Run as root (as docker exec does), it wrote as postgres: archive-push can still write everywhere.
    postgres = pwd.getpwnam("postgres").pw_uid
    repo = leader.root.parent / "pgbackrest-repo"
    foreign = [str(p) for p in repo.rglob("*") if p.stat().st_uid != postgres]
    assert not foreign, foreign[:10]


def test_each_look_of_the_schedule_records_the_newest_backups_end_for_the_exporters(cluster, settings, secret_values):
    """The exporters' backup age (PostgresBaseBackupTooOld): shipyard_monitor.base_backup in the
    ``postgres`` database, where the setup job makes it and the exporters read it — whatever the
    platform's database is. Each look of the schedule records the newest backup's end, so the
    backup taken at bootstrap, before the setup job made the table, is recorded by the next look."""
    import datetime as dt

    if "leader" not in STATE:
        pytest.fail("no failover with backups: the tests before failed")
    leader = STATE["leader"]
    with _connect(leader, settings, secret_values) as conn:  # as monitor-setup.sh makes it
        conn.execute("DROP SCHEMA IF EXISTS shipyard_monitor CASCADE")
        conn.execute("CREATE SCHEMA shipyard_monitor")
        conn.execute("CREATE TABLE shipyard_monitor.base_backup (id int PRIMARY KEY CHECK (id = 1), "
                     "finished_at timestamptz NOT NULL)")
    looked = run_script(leader, "tick", PG_BACKUP_INTERVAL_S="3600", PG_BACKUP_FULL_INTERVAL_S="604800",
                        PG_DATABASE="tasks")  # the platform's database, as a deploy sets it
    assert looked.returncode == 0 and "no backup due" in looked.stdout, looked.stdout + looked.stderr
    newest = run_script(leader, "list").stdout.split()[-1]  # the newest backup's end (ISO, UTC)
    with _connect(leader, settings, secret_values) as conn:
        recorded = conn.execute("SELECT finished_at FROM shipyard_monitor.base_backup").fetchone()
    assert recorded is not None, looked.stderr
    assert recorded[0] == dt.datetime.fromisoformat(newest), (recorded, newest)


def test_the_killed_leader_rejoins_with_the_archive_configured(cluster, settings, secret_values):
    """Back as a replica of the new leader (restore_command set, archive_command idle on it)."""
    if "killed" not in STATE:
        pytest.fail("no failover: the tests before failed")
    old, leader = STATE["killed"], STATE["leader"]
    old.start()
    wait_for(f"{old.name} streaming from {leader.name}", lambda: _streaming(leader, [old.name], settings, secret_values),
             120)
    # Streaming can precede a consistent state (connections refused until then): Patroni's own view.
    wait_for(f"{old.name} a healthy replica for Patroni (GET /replica)", lambda: old.get("/replica")[0] == 200, 60)
    with _connect(old, settings, secret_values) as conn:
        restore_command = conn.execute("SHOW restore_command").fetchone()[0]
    assert restore_command.startswith(f"pgbackrest --stanza={old.stanza} archive-get"), restore_command
