"""`make pg-promote` (a switchover), `make pg-rebuild` (a reinit) and the deploy's reconcile of
the dynamic configuration, through shipyard/components/postgres/patroni_api.py — the very calls
the deploy makes by docker exec — against the three real Patroni nodes of conftest (synchronous
mode on), reached on loopback. Runs after test_failover.py on the same cluster: each test starts
where the one before left it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from shipyard.components.postgres import patroni_decide
from shipyard.errors import ShipyardError
from shipyard.inventory import load_environment
from tests.patroni.conftest import REPO, VARIABLES, desired_config, patroni_cluster
from tests.waiting import wait_for

# The writer's pace: one acknowledged INSERT at a time, as fast as the leader takes them.
WRITES_AFTER_SWITCH = 50


def _settle(api) -> None:
    """Three running members, one the sync standby: Patroni names the sync standby in its loop
    after a switchover or restart, and until then refuses a switchover to a named replica."""
    def settled():
        view = api.view()["members"]
        return (sorted(m["role"] for m in view) == ["leader", "replica", "sync_standby"]
                and all(m["state"] in patroni_decide.RUNNING_STATES for m in view))

    wait_for("three running members, one sync standby", settled, 60)


@pytest.fixture(scope="module")
def api(cluster, settings, secret_values):
    ready = patroni_cluster(cluster, settings, secret_values)
    _settle(ready)  # as the failover tests left them
    return ready


class Writer(threading.Thread):
    """INSERTs one row per transaction into ``switch_writes`` through a connection string naming
    every node (target_session_attrs=read-write, as the API and workers do), reconnecting on
    any error; records each acknowledged id, when, and which node's port took it."""

    def __init__(self, cluster, settings, secret_values):
        super().__init__(daemon=True)
        self.dsn = {"host": ",".join("127.0.0.1" for _ in cluster), "port": ",".join(str(n.pg_port) for n in cluster),
                    "user": settings.postgres.user, "dbname": "postgres", "password": secret_values["postgres_password"],
                    "target_session_attrs": "read-write", "connect_timeout": 2, "autocommit": True}
        self.acked: list[tuple[int, float, int]] = []
        self.failed = 0
        self.connects = 0
        self.halt = threading.Event()

    def run(self) -> None:
        conn, next_id = None, 0
        while not self.halt.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(**self.dsn)
                    self.connects += 1
                conn.execute("INSERT INTO switch_writes VALUES (%s)", (next_id,))
                self.acked.append((next_id, time.monotonic(), conn.info.port))
            except psycopg.Error:
                self.failed += 1
                if conn is not None:
                    conn.close()
                conn = None
                self.halt.wait(0.02)  # retry pacing while no node takes writes, not a wait for it
            next_id += 1  # an id whose INSERT failed is never reused: it may have committed
        if conn is not None:
            conn.close()

    def acked_on(self, port: int, after: float) -> list[tuple[int, float, int]]:
        return [a for a in self.acked if a[2] == port and a[1] > after]


def _node(cluster, name):
    return next(n for n in cluster if n.name == name)


def test_switchover_under_acknowledged_writes_loses_none_and_the_old_leader_streams(
        cluster, settings, secret_values, api, capsys):
    leader = patroni_decide.leader_of(api.view())
    api.transport.sql(leader, "CREATE TABLE IF NOT EXISTS switch_writes (id int PRIMARY KEY)")
    writer = Writer(cluster, settings, secret_values)
    writer.start()
    try:
        wait_for("the writer acknowledged 50 rows", lambda: len(writer.acked) >= 50, 30)
        requested = time.monotonic()
        done = api.switch_over()
        new = _node(cluster, done.new)
        first = wait_for(f"a write acknowledged by the new leader {done.new}",
                         lambda: writer.acked_on(new.pg_port, requested), 30, interval_s=0.02)[0]
        wait_for(f"{WRITES_AFTER_SWITCH} writes on {done.new}",
                 lambda: len(writer.acked_on(new.pg_port, requested)) >= WRITES_AFTER_SWITCH, 30)
    finally:
        writer.halt.set()
        writer.join(10)
    accepting_s = first[1] - requested
    before = [a for a in writer.acked if a[1] <= requested]
    gap = max(b[1] - a[1] for a, b in zip(writer.acked, writer.acked[1:]))
    ids = [a[0] for a in writer.acked]
    found = api.transport.sql(done.new, f"SELECT count(*) FROM switch_writes WHERE id IN ({','.join(map(str, ids))})")
    with capsys.disabled():
        print(f"\npatroni switchover {done.old} -> {done.new}: Patroni answered after {done.answered_s:.2f} s, "
              f"{done.new} out of recovery {done.writable_s:.2f} s after the request, first write acknowledged on it "
              f"{accepting_s:.2f} s after the request (longest gap between acknowledged writes {gap:.2f} s), "
              f"{done.old} streaming from it at {done.streaming_s:.2f} s; writer: {len(writer.acked)} acknowledged "
              f"({len(before)} before), {writer.failed} failed attempts, {writer.connects} connections; "
              f"{found[0][0]}/{len(ids)} acknowledged rows on the new leader")
    assert done.action == "switchover" and done.old == leader and done.new != leader
    assert int(found[0][0]) == len(ids), "acknowledged rows lost"
    assert writer.connects >= 2, "the writer never had to reconnect: the switchover did not happen under it"
    view = patroni_decide.members(api.view())
    assert view[done.new]["role"] in patroni_decide.LEADER_ROLES
    assert api.streams(done.new, done.old)
    wait_for(f"{done.old} a healthy replica for Patroni", lambda: _node(cluster, done.old).get("/replica")[0] == 200, 30)


def test_promote_refuses_the_leader_a_stranger_and_a_replica_that_is_not_the_sync_standby(api):
    _settle(api)
    view = api.view()
    leader = patroni_decide.leader_of(view)
    others = {m["name"]: m["role"] for m in view["members"] if m["name"] != leader}
    with pytest.raises(ShipyardError, match="is already the leader"):
        api.switch_over(leader)
    with pytest.raises(ShipyardError, match="node-9 is not a member"):
        api.switch_over("node-9")
    # Synchronous mode: only the sync standby surely has every acknowledged commit.
    not_sync = next(name for name, role in others.items() if role != "sync_standby")
    with pytest.raises(ShipyardError, match="is not the synchronous standby"):
        api.switch_over(not_sync)
    assert patroni_decide.leader_of(api.view()) == leader  # nothing changed


def test_reinit_of_a_replica_clones_it_again_and_it_streams(cluster, api, capsys):
    _settle(api)
    view = api.view()
    leader = patroni_decide.leader_of(view)
    with pytest.raises(ShipyardError, match="is the leader"):
        api.reinitialize(leader)
    # The asynchronous replica: commits do not wait while it is cloned.
    replica = next(m["name"] for m in view["members"] if m["role"] == "replica")
    api.transport.sql(leader, "CREATE TABLE IF NOT EXISTS reinit_marker (id int); INSERT INTO reinit_marker VALUES (7)")
    # A file of our own in its data directory: a reinit wipes the directory and clones it anew.
    probe = _node(cluster, replica).root / "data" / "shipyard-reinit-probe"
    probe.write_text("before the reinit")
    before = _node(cluster, replica).postmaster_pid()
    took = api.reinitialize(replica)
    assert _node(cluster, replica).postmaster_pid() != before, "PostgreSQL was not started again"
    assert not probe.exists(), "the data directory was not cloned anew"
    wait_for(f"the marker on {replica}", lambda: api.transport.sql(replica, "SELECT id FROM reinit_marker") == [["7"]],
             30)
    with capsys.disabled():
        print(f"patroni reinit of {replica}: streaming from {leader} again {took:.1f} s after the request")


def _show(api, parameter: str) -> dict[str, str]:
    return {node: (api.transport.sql(node, f"SHOW {parameter}") or [["?"]])[0][0] for node in api.nodes}


def test_a_live_parameter_reaches_every_node_without_a_restart(cluster, api, capsys):
    changed = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_POSTGRES__MAX_SLOT_WAL_KEEP_SIZE_MB": "2048"})
    changes = patroni_decide.config_changes(desired_config(changed), api.config(), api.contexts())
    assert [(c.key, c.applies) for c in changes] == [("postgresql.parameters.max_slot_wal_keep_size", "live")]
    assert "applies live" in patroni_decide.plan_lines(changes)[0]
    started = {n.name: n.postmaster_pid() for n in cluster}
    began = time.monotonic()
    lines = api.reconcile(desired_config(changed))
    took = time.monotonic() - began
    assert _show(api, "max_slot_wal_keep_size") == {n: "2GB" for n in api.nodes}
    assert {n.name: n.postmaster_pid() for n in cluster} == started, "a node restarted"
    assert api.pending() == set()
    # Idempotent: the next deploy finds nothing to change.
    assert api.reconcile(desired_config(changed)) == ["Patroni dynamic configuration as the settings want: nothing to change"]
    with capsys.disabled():
        print(f"patroni reconcile, live parameter: {lines[0]}; on every node {took:.1f} s after the PATCH")


def test_a_restart_parameter_is_pending_then_applied_node_by_node(cluster, api, capsys):
    # max_slot_wal_keep_size stays at the value the test before set: only max_connections changes.
    changed = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_POSTGRES__MAX_SLOT_WAL_KEEP_SIZE_MB": "2048",
                                            "SHIPYARD_POSTGRES__MAX_CONNECTIONS": "120"})
    changes = patroni_decide.config_changes(desired_config(changed), api.config(), api.contexts())
    assert [(c.key, c.have, c.want, c.applies) for c in changes] == [
        ("postgresql.parameters.max_connections", 100, 120, "restart")]
    assert "needs a restart" in patroni_decide.plan_lines(changes)[0]
    old_leader = patroni_decide.leader_of(api.view())
    # The PATCH alone: Patroni reports the restart pending on every node, the old value still runs.
    status, _ = api.transport.api(old_leader, "PATCH", "/config", patroni_decide.config_patch(changes))
    assert status == 200
    wait_for("pending_restart on every node", lambda: api.pending() == set(api.nodes), 30)
    assert _show(api, "max_connections") == {n: "100" for n in api.nodes}
    # As a deploy that stopped after its PATCH leaves it: the next deploy's reconcile finds the
    # configuration right and the nodes pending (in the cluster's view, once each member's key
    # in etcd was renewed, as long before a next deploy) and restarts them, reason first.
    wait_for("pending_restart in the cluster's view",
             lambda: all(m.get("pending_restart") for m in api.view()["members"]), 30)
    began = time.monotonic()
    done = api.reconcile(desired_config(changed))
    took = time.monotonic() - began
    assert done[0] == ("Patroni dynamic configuration as the settings want; nodes still pending a restart from an "
                       f"earlier change: {', '.join(sorted(api.nodes))}"), done
    assert _show(api, "max_connections") == {n: "120" for n in api.nodes}
    assert api.pending() == set()
    assert done[-2].startswith(f"switchover {old_leader} -> "), done  # the leader last, handing over first
    assert done[-1].startswith(f"{old_leader} restarted"), done
    new_leader = patroni_decide.leader_of(api.view())
    assert new_leader != old_leader and api.streams(new_leader, old_leader)
    assert api.reconcile(desired_config(changed)) == ["Patroni dynamic configuration as the settings want: nothing to change"]
    with capsys.disabled():
        print(f"patroni restart path for max_connections 100 -> 120: {'; '.join(done)}; {took:.1f} s in all")


def test_a_lowered_standby_minimum_restarts_the_leader_in_place_then_every_replica(cluster, api, capsys):
    """max_connections back down 120 -> 100: a standby cannot run below its primary's value, so
    the leader restarts in place first, and each replica only once it replayed the WAL record
    its restarted primary wrote (its control file then holds 100; restarted before that, a
    replica stays on 120, still pending — CI met it)."""
    _settle(api)
    lowered = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_POSTGRES__MAX_SLOT_WAL_KEEP_SIZE_MB": "2048",
                                            "SHIPYARD_POSTGRES__MAX_CONNECTIONS": "100"})
    leader = patroni_decide.leader_of(api.view())
    began = time.monotonic()
    done = api.reconcile(desired_config(lowered))
    took = time.monotonic() - began
    assert done[0].startswith("Patroni dynamic configuration: postgresql.parameters.max_connections: 120 -> 100:"), done
    assert done[1].startswith(f"{leader} restarted"), done  # in place, first
    assert sorted(line.split()[0] for line in done[2:]) == sorted(n for n in api.nodes if n != leader), done
    assert _show(api, "max_connections") == {n: "100" for n in api.nodes}
    assert api.pending() == set()
    assert patroni_decide.leader_of(api.view()) == leader
    with capsys.disabled():
        print(f"patroni restart path for max_connections 120 -> 100: {'; '.join(done[1:])}; {took:.1f} s in all")


def test_a_value_postgresql_cannot_start_with_is_put_back_and_the_cluster_runs_on(cluster, api, capsys):
    """The deploy's health gate under Patroni: 60 GB of shared_buffers cannot be mapped here, so
    the first replica restarted with it does not come back; the previous configuration is
    PATCHed back, that replica starts again with it, the leader was never touched."""
    _settle(api)
    leader = patroni_decide.leader_of(api.view())
    before = api.config()["postgresql"]["parameters"]["shared_buffers"]
    broken = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_POSTGRES__MAX_SLOT_WAL_KEEP_SIZE_MB": "2048",
                                           "SHIPYARD_POSTGRES__MAX_CONNECTIONS": "100",
                                           "SHIPYARD_POSTGRES__SHARED_BUFFERS_MB": "60000"})
    began = time.monotonic()
    with pytest.raises(ShipyardError) as failed:
        api.reconcile(desired_config(broken), timeout_s=60)
    took = time.monotonic() - began
    assert "put back to what ran before, and every node runs again" in failed.value.what, failed.value
    assert api.config()["postgresql"]["parameters"]["shared_buffers"] == before
    assert patroni_decide.leader_of(api.view()) == leader
    assert _show(api, "shared_buffers") == {n: _show(api, "shared_buffers")[leader] for n in api.nodes}
    assert api.pending() == set()
    with capsys.disabled():
        print(f"patroni health gate: shared_buffers 60000MB refused and put back in {took:.1f} s: {failed.value.what}")
