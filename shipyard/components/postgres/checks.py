"""PostgreSQL under Patroni: exactly one node is the primary (not necessarily `postgres`: a
failover or `make pg-promote` moves it); every other node streams from it on its own active
slot, reports its lag, and really receives what the primary commits; the WAL archive
(pgBackRest) works. Patroni's view from its REST API: one leader, every node a running member
on the leader's timeline within the lag limit, changes refused without the API's credentials,
the API not published."""

import json
import time
import uuid

import docker.errors
import pytest

from shipyard import topology
from shipyard.components.postgres import CONF, patroni, slot_name
from shipyard.components.postgres.instances import node_names as postgres_nodes, replica_names


_AS_REPLICATOR = "host=127.0.0.1 user=replicator dbname=postgres passfile=/run/secrets/replication_pgpass"
_AS_OWNER = "host=127.0.0.1 user={user} dbname=postgres passfile=/run/secrets/superuser_pgpass"


def _psql(target, service: str, sql: str, as_owner: bool = False) -> str:
    """SQL inside a PostgreSQL container (on whichever host runs it): as the replication role
    through the node's passfile (roles, slots, lag), or as the database owner for table access
    (through the node's own superuser passfile)."""
    conninfo = _AS_OWNER.format(user=target.settings.postgres.user) if as_owner else _AS_REPLICATOR
    code, out, err = target.exec(service, ["psql", conninfo, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
    assert code == 0, f"{service}: {sql}: {err.strip()}"
    return out.strip()


# The cluster is checked from the first node's host (the repository's), reaching into every node
# wherever it runs: a node on another data host is checked through the link it streams over.
_FROM_ELSEWHERE = "the PostgreSQL cluster is checked from its first node's host"


@pytest.fixture(scope="module")
def primary(target):
    if not target.runs_service("postgres"):
        pytest.skip(_FROM_ELSEWHERE if target.runs("postgres") else "no PostgreSQL on this host")
    in_recovery = {node: _psql(target, node, "SELECT pg_is_in_recovery()") for node in postgres_nodes(target.settings)}
    primaries = [node for node, answer in in_recovery.items() if answer == "f"]
    assert len(primaries) == 1, f"expected exactly one primary: {in_recovery}"
    return primaries[0]


@pytest.fixture(scope="module")
def replicas(target, primary):
    names = tuple(node for node in postgres_nodes(target.settings) if node != primary)
    if not names:
        pytest.skip("postgres.replicas is 0")
    return names


def test_every_replica_streams_on_its_own_active_slot(target, primary, replicas):
    senders = _psql(target, primary, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' "
                                     "ORDER BY 1")
    assert senders.split() == sorted(replicas)  # application_name is each node's cluster_name
    slots = _psql(target, primary, "SELECT slot_name || ':' || active FROM pg_replication_slots ORDER BY 1")
    # No archive slot: pgBackRest archives through archive_command.
    assert slots.split() == sorted(f"{slot_name(name)}:true" for name in replicas)


def test_the_wal_archive_takes_the_primarys_wal(target, primary):
    """pgBackRest's archive_command: `pgbackrest check` on the primary switches the WAL segment
    and waits until it is archived (pgbackrest-node.py flush; a switch is all it changes)."""
    code, out, err = target.exec(primary, ["python3", f"{CONF}/pgbackrest-node.py", "flush"])
    assert code == 0, f"{primary}: the WAL archive (pgBackRest) does not work: {(err or out).strip()[-800:]}"


def test_replicas_report_their_lag_and_are_in_recovery(target, replicas):
    for name in replicas:
        row = _psql(target, name, "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver), "
                                  "pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())")
        in_recovery, status, lag_bytes = row.split("|")
        assert (in_recovery, status) == ("t", "streaming"), row
        assert float(lag_bytes) < target.settings.postgres.replica_max_lag_mb * 1024 * 1024


def test_a_commit_on_the_primary_reaches_every_replica(target, primary, replicas):
    """A table of its own, dropped again: verifying leaves nothing behind in the database."""
    table = f"shipyard_verify_{uuid.uuid4().hex[:12]}"
    _psql(target, primary, f"CREATE TABLE {table} (marker int); INSERT INTO {table} VALUES (1)", as_owner=True)
    try:
        for name in replicas:
            deadline = time.monotonic() + 10
            found = ""
            while time.monotonic() < deadline:
                found = _psql(target, name, f"SELECT count(*) FROM pg_class WHERE relname = '{table}'")
                if found == "1":
                    break
                time.sleep(0.2)
            assert found == "1", f"{name} did not receive the commit within 10 s"
    finally:
        _psql(target, primary, f"DROP TABLE {table}", as_owner=True)


def test_every_node_refuses_unauthenticated_clients(target, primary):
    """Through the published port (no password: refused), and inside each replica too."""
    pg_bind, pg_port = topology.build(target.settings).published(target.rendered.host, "postgres")
    client = target.docker.docker
    image = target.container_of("postgres")["Config"]["Image"]
    with pytest.raises(docker.errors.ContainerError) as refused:
        client.containers.run(image, ["-h", pg_bind, "-p", str(pg_port), "-U", target.settings.postgres.user,
                                      "-w", "-c", "select 1"], entrypoint=["psql"], network_mode="host", remove=True,
                              stderr=True)
    assert "password" in (refused.value.stderr or b"").decode()
    for replica in replica_names(target.settings):
        code, out, err = target.exec(replica, ["psql", "-h", "127.0.0.1", "-U", target.settings.postgres.user, "-w",
                                               "-d", "postgres", "-c", "select 1"])
        assert code != 0 and "password" in err and "1 row" not in out, replica



# Patroni's own view, from its REST API inside the nodes (port 8008: on the project network, and
# on the hosts' private addresses only once the nodes span hosts).
_API = f"http://127.0.0.1:{patroni.API_PORT}"


def _api(target, node: str, method: str, path: str) -> tuple[int, str]:
    """(HTTP status, body) of one REST API request made inside ``node`` (no credentials)."""
    script = ("import sys, urllib.request, urllib.error\n"
              "req = urllib.request.Request(sys.argv[1], method=sys.argv[2], data=b'{}' if sys.argv[2] != 'GET' else None)\n"
              "try:\n    r = urllib.request.urlopen(req, timeout=5); print(r.status); print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n")
    code, out, err = target.exec(node, ["python3", "-c", script, f"{_API}{path}", method])
    assert code == 0, f"{node}: {method} {path}: {err.strip()}"
    status, _, body = out.partition("\n")
    return int(status), body


@pytest.fixture(scope="module")
def patroni_cluster(target):
    if not target.runs_service("postgres"):
        pytest.skip(_FROM_ELSEWHERE if target.runs("postgres") else "no PostgreSQL on this host")
    status, body = _api(target, postgres_nodes(target.settings)[0], "GET", "/cluster")
    assert status == 200, body
    return json.loads(body)


def test_patroni_has_one_leader_and_every_node_as_a_running_member(target, patroni_cluster):
    members = {m["name"]: m for m in patroni_cluster["members"]}
    assert sorted(members) == sorted(postgres_nodes(target.settings)), members
    leaders = [name for name, m in members.items() if m["role"] in ("leader", "master", "primary")]
    assert len(leaders) == 1, members
    not_running = {name: m["state"] for name, m in members.items() if m["state"] not in ("running", "streaming")}
    assert not not_running, not_running


def test_patroni_replicas_are_on_the_leaders_timeline_and_within_the_lag_limit(target, patroni_cluster):
    limit = target.settings.postgres.replica_max_lag_mb * 1024 * 1024

    def behind(cluster: dict) -> list[dict]:
        members = cluster["members"]
        leader = next(m for m in members if m["role"] in ("leader", "master", "primary"))
        return [m for m in members if m is not leader and not (
            m["timeline"] == leader["timeline"] and isinstance(m.get("lag"), int) and m["lag"] < limit)]

    # Patroni's lag is the leader's WAL position against the one each replica last put in etcd
    # (every loop_wait_s): a segment switch (archive_timeout, a backup's start) just after a
    # rollout reads as a segment of lag until the replica's next report. Within the health
    # window, read again; a replica that stays behind fails.
    cluster, deadline = patroni_cluster, time.monotonic() + 30
    while behind(cluster) and time.monotonic() < deadline:
        time.sleep(1)
        status, body = _api(target, postgres_nodes(target.settings)[0], "GET", "/cluster")
        cluster = json.loads(body) if status == 200 else cluster
    assert not behind(cluster), behind(cluster)


def test_patronis_rest_api_refuses_changes_without_its_credentials(target, patroni_cluster):
    node = postgres_nodes(target.settings)[0]
    status, body = _api(target, node, "POST", "/restart")
    assert status == 401, f"{node}: POST /restart without credentials answered {status}: {body[:200]}"


def test_patronis_rest_api_is_published_only_for_nodes_on_other_hosts(target, patroni_cluster):
    """Nowhere while the nodes share a host; on each host's private address (never loopback or
    every address) once they span hosts: the peers ask each other's WAL position there."""
    topo = topology.build(target.settings)
    for node in postgres_nodes(target.settings):
        inst = topo.find(node)
        bound = (target.container_of(node)["HostConfig"]["PortBindings"] or {}).get(f"{patroni.API_PORT}/tcp")
        if topo.peers_span_hosts(inst):
            assert bound == [{"HostIp": inst.host.address, "HostPort": str(patroni.API_PORT)}], f"{node}: {bound}"
        else:
            assert not bound, f"{node} publishes Patroni's REST API: {bound}"


def test_every_node_may_take_over(target, patroni_cluster):
    """Patroni's own tags, as the nodes report them: no node tagged nofailover. Every node reaches
    the one repository (a volume beside them, or its server once they span hosts), so any may
    lead; a node wears the tag only while it joins with no data (files/postgres/patroni-node.sh),
    which a deploy's health gates have waited past."""
    tagged = sorted(m["name"] for m in patroni_cluster["members"] if (m.get("tags") or {}).get("nofailover"))
    assert tagged == [], f"tagged nofailover (not failover candidates): {', '.join(tagged)}"