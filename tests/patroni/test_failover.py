"""Three PostgreSQL nodes run by Patroni from the rendered config, synchronous mode on (conftest):
a leader elected, two replicas streaming; the leader killed (SIGKILL of Patroni and of
PostgreSQL): the synchronous replica promoted by itself within a bound, every row acknowledged
before the kill on it; the old leader restarted rejoins as a replica of the new timeline.
The tests run in order and share the cluster: each starts where the one before left it."""

from __future__ import annotations

import time

import psycopg
import pytest
import requests

from shipyard.components.postgres import patroni
from tests.waiting import wait_for

ROWS = 200  # each its own transaction, each acknowledged before the kill
# Expected: the dead leader's key expires at most ttl_s after its last renewal, then the
# replica's next loop promotes it. The bound adds 5 s for the loop, the promotion and a busy
# 2-core machine; with the defaults (ttl 10 s) it is the target, 15 s.
MARGIN_S = 5
FIGURES: dict = {}


def _connect(node, settings, secret_values, dbname: str = "postgres"):
    return psycopg.connect(host="127.0.0.1", port=node.pg_port, user=settings.postgres.user, dbname=dbname,
                           password=secret_values["postgres_password"], autocommit=True, connect_timeout=3)


def _primary(nodes):
    """The node running as primary with the leader lock (Patroni's GET /primary: 200), if one."""
    return next((n for n in nodes if n.process.poll() is None and n.get("/primary")[0] == 200), None)


def _replication(leader, settings, secret_values) -> dict[str, tuple[str, str]]:
    """application_name (Patroni sets the member name) → (state, sync_state), on the leader."""
    try:
        with _connect(leader, settings, secret_values) as conn:
            rows = conn.execute("SELECT application_name, state, sync_state FROM pg_stat_replication").fetchall()
    except psycopg.OperationalError:
        return {}
    return {name: (state, sync) for name, state, sync in rows}


def _streaming(leader, names, settings, secret_values, *, synchronous: int = 0) -> bool:
    seen = _replication(leader, settings, secret_values)
    streaming = {n for n, (state, _) in seen.items() if state == "streaming"}
    in_sync = {n for n, (_, sync) in seen.items() if sync == "sync"}
    return streaming >= set(names) and len(in_sync) >= synchronous


def _write(node, row: int, settings, secret_values) -> bool:
    try:
        with _connect(node, settings, secret_values) as conn:
            conn.execute("INSERT INTO acknowledged VALUES (%s)", (row,))
        return True
    except (psycopg.errors.ReadOnlySqlTransaction, psycopg.OperationalError):
        return False


def _roles(node) -> list[str]:
    return sorted(m["role"] for m in node.get("/cluster")[1].get("members", []))


def _timeline(node) -> int | None:
    return node.get("/patroni")[1].get("timeline")


def test_a_leader_is_elected_and_two_replicas_stream_one_synchronously(cluster, settings, secret_values):
    leader = wait_for("a leader elected", lambda: _primary(cluster), 120)
    others = [n.name for n in cluster if n is not leader]
    # Synchronous mode: Patroni names one replica in synchronous_standby_names once it streams.
    wait_for(f"{others} streaming from {leader.name}, one synchronously",
             lambda: _streaming(leader, others, settings, secret_values, synchronous=1), 120)
    # And records it in etcd (the /sync key): only that replica may be promoted.
    wait_for("the synchronous standby recorded", lambda: _roles(leader) == ["leader", "replica", "sync_standby"], 30)


def test_the_leader_killed_the_synchronous_replica_takes_over_with_every_acknowledged_row(
        cluster, settings, secret_values, capsys):
    leader = _primary(cluster)
    assert leader, "no leader: the test before failed"
    sync = next(m["name"] for m in leader.get("/cluster")[1]["members"] if m["role"] == "sync_standby")
    with _connect(leader, settings, secret_values) as conn:
        conn.execute("CREATE TABLE acknowledged (id int PRIMARY KEY)")
        for i in range(ROWS):
            conn.execute("INSERT INTO acknowledged VALUES (%s)", (i,))  # returns once the standby has it
    leader.kill()
    killed = time.monotonic()
    survivors = [n for n in cluster if n is not leader]
    bound = settings.postgres.patroni.ttl_s + MARGIN_S
    new = wait_for("a replica promoted", lambda: _primary(survivors), bound + 30, interval_s=0.1)
    promoted_s = time.monotonic() - killed
    # Patroni says "primary" as soon as it asked PostgreSQL to promote: the end of recovery follows.
    wait_for(f"a write accepted by {new.name}", lambda: _write(new, ROWS, settings, secret_values), 30, interval_s=0.1)
    written_s = time.monotonic() - killed
    with _connect(new, settings, secret_values) as conn:
        count = conn.execute("SELECT count(*) FROM acknowledged WHERE id < %s", (ROWS,)).fetchone()[0]
    FIGURES.update(killed=leader, leader=new)
    with capsys.disabled():
        print(f"\npatroni failover (etcd, ttl {settings.postgres.patroni.ttl_s} s, loop_wait "
              f"{settings.postgres.patroni.loop_wait_s} s, synchronous): {new.name} primary {promoted_s:.1f} s after "
              f"the kill of {leader.name}, first write acknowledged at {written_s:.1f} s; "
              f"{count}/{ROWS} acknowledged rows on it")
    assert new.name == sync, f"{new.name} promoted, but the synchronous standby was {sync}"
    assert count == ROWS, f"{ROWS - count} acknowledged rows lost"
    assert promoted_s <= bound, f"promoted after {promoted_s:.1f} s, over the bound {bound} s"


def test_the_old_leader_restarted_rejoins_as_a_replica_of_the_new_timeline(cluster, settings, secret_values, capsys):
    if "killed" not in FIGURES:
        pytest.fail("no failover: the test before failed")
    old, new = FIGURES["killed"], FIGURES["leader"]
    started = time.monotonic()
    old.start()
    wait_for(f"{old.name} streaming from {new.name}",
             lambda: _streaming(new, [old.name], settings, secret_values), 120)
    rejoined_s = time.monotonic() - started
    assert _primary(cluster) is new  # no second primary
    wait_for(f"{old.name} on the new timeline", lambda: _timeline(old) == _timeline(new), 30)
    # Patroni's own view of it: a healthy replica (GET /replica: 200) once its loop saw it streaming.
    wait_for(f"{old.name} a healthy replica for Patroni (GET /replica)", lambda: old.get("/replica")[0] == 200, 30)
    # Whether it had to rewind depends on what its WAL held past the switch; when it did, it ran as
    # the rewind role (pg_rewind as Patroni's non-superuser), not as the superuser.
    runs = [line for line in old.log_text().splitlines() if "running pg_rewind from dbname=" in line]
    rewound = bool(runs)
    assert all(f"user={patroni.REWIND_USER}" in line for line in runs), runs
    with capsys.disabled():
        print(f"patroni: {old.name} back as a replica of {new.name} (timeline {_timeline(new)}) "
              f"{rejoined_s:.1f} s after its restart; pg_rewind {'ran' if rewound else 'not needed'}")


def test_the_rest_api_refuses_changes_without_its_credentials(cluster, settings, secret_values):
    node = next(n for n in cluster if n.process.poll() is None)  # one the tests before left running
    # A patch setting ttl to the value it has changes nothing, whoever sends it.
    same = {"ttl": settings.postgres.patroni.ttl_s}
    assert requests.patch(f"{node.api}/config", json=same, timeout=5).status_code == 401
    wrong = requests.patch(f"{node.api}/config", json=same, timeout=5, auth=(patroni.API_USER, "wrong"))
    assert wrong.status_code == 401
    right = requests.patch(f"{node.api}/config", json=same, timeout=5,
                           auth=(patroni.API_USER, secret_values["patroni_api_password"]))
    assert right.status_code == 200, right.text
    assert right.json()["ttl"] == settings.postgres.patroni.ttl_s


def test_no_secret_lands_in_a_log_the_config_or_pgdata(cluster, etcd, secret_values):
    """Patroni hands the replication password to PostgreSQL through its passfile (run/), so
    ``primary_conninfo`` in PGDATA names the file; nothing it logs or renders holds a value."""
    places = [etcd.root / "etcd.log"]
    for node in cluster:
        places += [*node.logs, node.root / "conf" / "patroni.yml"]
        places += [p for p in (node.root / "data").glob("*.conf")]
    leaks = [(str(path), name) for path in places for name, value in secret_values.items()
             if value in path.read_text(errors="replace")]
    assert not leaks
    conf = (cluster[0].root / "data" / "postgresql.conf").read_text()
    replicas = [n for n in cluster if "primary_conninfo" in (n.root / "data" / "postgresql.conf").read_text()]
    assert replicas, conf
    assert all(f"passfile={n.root / 'run' / 'pgpass'}" in (n.root / "data" / "postgresql.conf").read_text()
               for n in replicas)
