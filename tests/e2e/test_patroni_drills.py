"""The failures around Patroni's lock, under the platform's own traffic through the edge (issue
#22): the DCS (every etcd member) gone for a while, and the leader cut off from the network.
Skipped with a single PostgreSQL node.

Split brain is watched, not inferred: all the time a drill runs, every node is asked over its own
loopback, inside its container, whether it takes writes (``pg_is_in_recovery()``); two nodes
answering yes in one round fails the drill. The figures are printed on lines starting
``patroni-drill:``."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from shipyard.components.postgres.instances import node_names
from shipyard.controller.drills import container_of
from tests.drill_traffic import Traffic, api_client, wait_all_processed
from tests.patroni_view import (WritableWatch, cluster_seen_by, healthy_cluster, leader_of, lost_within_bound,
                                 takes_writes)
from tests.waiting import wait_for

from .conftest import patroni_settings


@pytest.fixture(scope="module")
def settings(env_name):
    return patroni_settings(env_name)


def _etcd_containers(settings) -> list[str]:
    """Every etcd member's container of the environment (the whole DCS)."""
    names = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={settings.compose_project}",
                            "--format", '{{.Label "com.docker.compose.service"}} {{.Names}}'],
                           check=True, capture_output=True, text=True).stdout.split("\n")
    found = [line.split()[1] for line in names if line.startswith("etcd")]
    assert found, f"no running etcd member in {settings.compose_project}"
    return found


def test_losing_every_etcd_member_keeps_the_primary_and_its_writes(settings):
    """Failsafe mode: with etcd gone but every member reachable, the leader stays primary, no
    replica is promoted, and task creates go on; etcd back, the cluster is as before."""
    nodes = node_names(settings)
    ttl = settings.postgres.patroni.ttl_s
    before = wait_for("a healthy Patroni cluster before the drill", lambda: healthy_cluster(settings, nodes), 120)
    leader = leader_of(before)
    timeline = next(m["timeline"] for m in before["members"] if m["name"] == leader)
    etcd = _etcd_containers(settings)
    client = api_client(settings, tenant="patroni-dcs-drill")
    # Three lease lifetimes without a DCS: without failsafe mode the leader would have demoted
    # itself after retry_timeout_s, and Patroni's watchers would have seen the key expire.
    outage_s = 3 * ttl
    with WritableWatch(settings, nodes) as watch, Traffic(client) as traffic:
        wait_for("tasks accepted before etcd stops", lambda: len(traffic.accepted) >= 20, 60)
        subprocess.run(["docker", "stop", "--time", "1", *etcd], check=True, capture_output=True)
        stopped_at = time.monotonic()
        wait_for(f"{outage_s} s with etcd stopped", lambda: time.monotonic() - stopped_at >= outage_s, outage_s + 5)
        during = sum(1 for sent, _ in list(traffic.acknowledged) if sent > stopped_at)
        subprocess.run(["docker", "start", *etcd], check=True, capture_output=True)
        started_at = time.monotonic()
        after = wait_for("the cluster healthy again with etcd back", lambda: healthy_cluster(settings, nodes), 120)
        back_s = time.monotonic() - started_at
    counts = wait_all_processed(client, traffic.accepted, timeout=180)
    window = watch.writable_between(stopped_at, started_at)
    print(f"\npatroni-drill: etcd ({len(etcd)} member(s)) stopped {outage_s} s under traffic: {leader} writable in "
          f"{sum(1 for w in window if leader in w)}/{len(window)} rounds, another node in "
          f"{sum(1 for w in window if w - {leader})}; {during} tasks acknowledged during the outage, longest gap "
          f"without one {traffic.longest_gap_s:.1f} s; healthy {back_s:.1f} s after etcd's start; accepted "
          f"{counts['accepted']}, processed {counts['processed']}, refused {traffic.refused}")
    assert not watch.split_brains(), watch.split_brains()[:5]
    assert window and all(w == {leader} for w in window), \
        f"the leader {leader} stopped taking writes or another node did, with etcd away: {window}"
    assert during >= 20, f"only {during} tasks acknowledged in {outage_s} s without etcd"
    members = {m["name"]: m for m in after["members"]}
    assert leader_of(after) == leader and members[leader]["timeline"] == timeline, \
        f"a failover happened: {members}"
    assert counts["accepted"] == counts["processed"], counts


def _network_of(container: str) -> tuple[str, dict]:
    """The container's project network and its endpoint there (aliases, address)."""
    networks = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}",
                                          container], check=True, capture_output=True, text=True).stdout)
    assert len(networks) == 1, f"{container} is on {sorted(networks)}: the drill cuts one network"
    return next(iter(networks.items()))


def test_a_leader_cut_off_from_the_network_demotes_itself_and_never_two_primaries(settings):
    """The leader's container disconnected from the project network (from etcd, its peers and
    the API at once): a replica takes the lock, the old leader stops taking writes by itself
    (failsafe mode does not keep it: it cannot reach its members), and two nodes never take
    writes at the same time. Reconnected, it rejoins as a replica."""
    nodes = node_names(settings)
    ttl = settings.postgres.patroni.ttl_s
    before = wait_for("a healthy Patroni cluster before the drill", lambda: healthy_cluster(settings, nodes), 120)
    old_leader = leader_of(before)
    survivors = [n for n in nodes if n != old_leader]
    container = container_of(settings, old_leader)
    network, endpoint = _network_of(container)
    client = api_client(settings, tenant="patroni-partition-drill")
    reconnect = ["docker", "network", "connect", "--ip", endpoint["IPAddress"]]
    for alias in endpoint.get("Aliases") or []:
        reconnect += ["--alias", alias]
    with WritableWatch(settings, nodes) as watch, Traffic(client) as traffic:
        wait_for("tasks accepted before the partition", lambda: len(traffic.accepted) >= 20, 60)
        subprocess.run(["docker", "network", "disconnect", network, container], check=True, capture_output=True)
        cut_at = time.monotonic()
        try:
            new_leader = wait_for(f"a new leader among {survivors} after {old_leader} was cut off",
                                  lambda: next((leader_of(c) for c in (cluster_seen_by(settings, n) for n in survivors)
                                                if leader_of(c) in survivors), None), ttl + 30)
            leader_s = time.monotonic() - cut_at
            wait_for(f"{old_leader} no longer taking writes", lambda: takes_writes(settings, old_leader) is not True,
                     ttl + 30)
            demoted_s = time.monotonic() - cut_at
            first_ack = wait_for("a task acknowledged after the partition",
                                 lambda: next((answered for sent, answered in list(traffic.acknowledged)
                                               if sent > cut_at), None), ttl + 40)
            wait_for("more tasks accepted on the new leader",
                     lambda: sum(1 for sent, _ in list(traffic.acknowledged) if sent > cut_at) >= 20, 60)
        finally:
            subprocess.run(reconnect + [network, container], check=True, capture_output=True)
        healed_at = time.monotonic()
        after = wait_for(f"{old_leader} back as a streaming replica of {new_leader}",
                         lambda: healthy_cluster(settings, nodes), 180)
        rejoin_s = time.monotonic() - healed_at
    counts = wait_all_processed(client, traffic.accepted, timeout=180)
    print(f"\npatroni-drill: {old_leader} cut off from {network} under traffic -> {new_leader} leader after "
          f"{leader_s:.1f} s, {old_leader} stopped taking writes {demoted_s:.1f} s after the cut, first acknowledged "
          f"write {first_ack - cut_at:.1f} s after it; {len(watch.samples)} rounds watched, split brain in "
          f"{len(watch.split_brains())}; rejoined {rejoin_s:.1f} s after reconnecting; accepted {counts['accepted']}, "
          f"processed {counts['processed']}, refused {traffic.refused}")
    assert not watch.split_brains(), f"two nodes took writes at once: {watch.split_brains()[:5]}"
    members = {m["name"]: m for m in after["members"]}
    assert leader_of(after) == new_leader and members[old_leader]["role"] in ("replica", "sync_standby"), members
    lost_within_bound(traffic, counts, cut_at, settings.postgres.patroni.synchronous)
