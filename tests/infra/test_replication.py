"""PostgreSQL streaming replication: every replica streams on its own active slot, reports its
lag, and really receives what the primary commits."""

import shlex
import time
import uuid

import pytest

from shipyard import commands
from shipyard.topology import postgres_replicas


def _psql(target, service: str, sql: str, replica_role: bool = False) -> str:
    """Run SQL inside a PostgreSQL container, authenticating from its own secret files."""
    name = target.container_of(service)["Name"].lstrip("/")
    if replica_role:
        auth = "PGUSER=replicator PGPASSFILE=/run/secrets/replication_pgpass"
    else:
        auth = f"PGUSER={target.settings.postgres.user} PGPASSWORD=$(cat /run/secrets/postgres_password)"
    script = f"{auth} psql -h 127.0.0.1 -d postgres -qtAX -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}"
    return target.host.check_output(commands.to_shell(["docker", "exec", name, "bash", "-c", script]))


@pytest.fixture(scope="module")
def replicas(target):
    if "data" not in target.rendered.host.roles:
        pytest.skip("no data tier on this host")
    names = postgres_replicas(target.settings)
    if not names:
        pytest.skip("postgres.replicas is 0")
    return names


def test_every_replica_streams_on_its_own_active_slot(target, replicas):
    senders = _psql(target, "postgres", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    assert int(senders) == len(replicas)
    slots = _psql(target, "postgres", "SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1")
    assert slots.split() == sorted(f"{name.replace('-', '_')}:true" for name in replicas)


def test_replicas_report_their_lag_and_are_in_recovery(target, replicas):
    for name in replicas:
        row = _psql(target, name, "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), "
                                  "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())",
                    replica_role=True)
        in_recovery, status, lag_bytes = row.split("|")
        assert (in_recovery, status) == ("t", "streaming"), row
        assert float(lag_bytes) < target.settings.postgres.replica_max_lag_mb * 1024 * 1024


def test_a_commit_on_the_primary_reaches_every_replica(target, replicas):
    marker = uuid.uuid4().hex
    _psql(target, "postgres", f"CREATE TABLE IF NOT EXISTS shipyard_verify (marker text); "
                              f"GRANT SELECT ON shipyard_verify TO replicator; INSERT INTO shipyard_verify VALUES ('{marker}')")
    for name in replicas:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = _psql(target, name, f"SELECT count(*) FROM shipyard_verify WHERE marker = '{marker}'",
                          replica_role=True)
            if found == "1":
                break
            time.sleep(0.2)
        assert found == "1", f"{name} did not receive the commit within 10 s"
    _psql(target, "postgres", f"DELETE FROM shipyard_verify WHERE marker = '{marker}'")
