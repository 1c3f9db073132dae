"""PostgreSQL under Patroni on a rolled-out environment: the leader's
container killed (SIGKILL, not restarted by its restart policy: a dead host) while tasks are
being created through the edge. Patroni promotes a replica by itself, the API and workers follow
(they connect to every node with target_session_attrs=read-write), every accepted task is
processed, and the old leader, started again, rejoins as a replica by itself (pg_rewind or a
re-clone: Patroni's call, no operator step). Skipped with a single PostgreSQL node.

    SHIPYARD_POSTGRES__REPLICAS=2 .venv/bin/python -m pytest -q -s tests/e2e/test_patroni_failover.py --shipyard-env local

Under ``postgres.patroni.synchronous`` no acknowledged task may be missing; without it (async
replication) what the leader had not yet sent when it died is lost by design: the count is
printed, not asserted. The figures (seconds from the kill to the new leader and to the first
acknowledged write) are printed on one line starting ``patroni-failover:``."""

from __future__ import annotations

import subprocess
import time

import pytest

from shipyard.components.postgres.instances import node_names
from shipyard.controller.drills import container_of
from tests.drill_traffic import Traffic, api_client, wait_all_processed
from tests.patroni_view import cluster_seen_by, healthy_cluster, leader_of, lost_within_bound
from tests.waiting import wait_for

from .conftest import patroni_settings


@pytest.fixture(scope="module")
def settings(env_name):
    return patroni_settings(env_name)


def test_killing_the_leader_under_traffic_promotes_a_replica_and_loses_no_acknowledged_task(settings):
    nodes = node_names(settings)
    ttl = settings.postgres.patroni.ttl_s
    before = wait_for("a healthy Patroni cluster before the drill", lambda: healthy_cluster(settings, nodes), 120)
    old_leader = leader_of(before)
    old_timeline = next(m["timeline"] for m in before["members"] if m["name"] == old_leader)
    survivors = [n for n in nodes if n != old_leader]
    client = api_client(settings, tenant="patroni-drill")
    with Traffic(client) as traffic:
        wait_for("tasks accepted before the kill", lambda: len(traffic.accepted) >= 20, 60)
        container = container_of(settings, old_leader)
        subprocess.run(["docker", "kill", "--signal", "KILL", container], check=True, capture_output=True)
        killed_at = time.monotonic()
        # The bound: the leader key expires after ttl, then one HA loop and the promotion.
        new_leader = wait_for(f"a new leader among {survivors} after {old_leader} was killed",
                              lambda: next((leader_of(c) for c in map(lambda n: cluster_seen_by(settings, n), survivors)
                                            if leader_of(c) in survivors), None), ttl + 20)
        leader_s = time.monotonic() - killed_at
        first_ack = wait_for("a task acknowledged after the kill",
                             lambda: next((answered for sent, answered in list(traffic.acknowledged) if sent > killed_at),
                                          None), ttl + 40)
        write_s = first_ack - killed_at
        wait_for("more tasks accepted on the new leader",
                 lambda: sum(1 for sent, _ in list(traffic.acknowledged) if sent > killed_at) >= 20, 60)
    counts = wait_all_processed(client, traffic.accepted, timeout=180)
    # The dead host comes back: its node must rejoin as a replica by itself (no pg-rebuild).
    started = time.monotonic()
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    after = wait_for(f"{old_leader} back as a streaming replica of {new_leader}",
                     lambda: healthy_cluster(settings, nodes), 180)
    rejoin_s = time.monotonic() - started
    members = {m["name"]: m for m in after["members"]}
    print(f"\npatroni-failover: {old_leader} killed -> {new_leader} leader after {leader_s:.1f} s, first acknowledged "
          f"write {write_s:.1f} s after the kill; longest gap without an accepted task {traffic.longest_gap_s:.1f} s; "
          f"tasks accepted {counts['accepted']}, processed {counts['processed']}, refused {traffic.refused}; "
          f"{old_leader} streaming again {rejoin_s:.1f} s after its start; synchronous "
          f"{settings.postgres.patroni.synchronous}, ttl {ttl} s")
    # A replica, or the synchronous one (synchronous mode may pick it).
    assert leader_of(after) == new_leader and members[old_leader]["role"] in ("replica", "sync_standby"), members
    assert members[new_leader]["timeline"] > old_timeline, members
    assert write_s <= ttl + 40
    lost_within_bound(traffic, counts, killed_at, settings.postgres.patroni.synchronous)
