"""Failure drills on the rolled-out environment, while tasks are being created: the Redis
master goes away (a Sentinel failover, then the master container stopped), a PostgreSQL replica
is promoted (Patroni's switchover) and one reinitialised. Every task the API accepted is
processed, and the environment converges back. The leader killed or cut off:
test_patroni_failover.py, test_patroni_drills.py."""

import subprocess
import sys
import time

import pytest

from shipyard.controller.drills import container_of
from shipyard.components.postgres.roles import primary_of, roles
from shipyard.components.redis.failover import replicas_in_sync, sentinel_masters
from shipyard.components.redis.instances import sentinel_names
from shipyard.inventory import load_environment
from shipyard.components.postgres.instances import node_names as postgres_nodes
from tests.drill_traffic import Traffic, api_client, wait_all_processed

from .conftest import REPO, redis_role, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


@pytest.fixture(scope="module")
def client(settings):
    return api_client(settings)


def test_sentinel_failover_under_traffic_loses_no_task(env_name, settings, client):
    with Traffic(client) as traffic:
        time.sleep(1)
        result = run_shipyard("redis-failover", "--env", env_name)
        time.sleep(2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all Sentinels agree" in result.stdout
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts


def test_stopping_the_master_container_elects_a_new_master_and_loses_no_task(settings, client):
    # A replica to promote: one that replicates from the master now (after the drill above the
    # old master may still be copying the data set).
    deadline = time.monotonic() + 60
    while (in_sync := replicas_in_sync(settings))[0] < settings.redis.replicas and time.monotonic() < deadline:
        time.sleep(0.2)
    assert in_sync[0] == settings.redis.replicas, in_sync
    old = sentinel_masters(settings)[0]
    old_service = old.split(":")[0]  # single host: Sentinel announces service names
    container = container_of(settings, old_service)
    with Traffic(client) as traffic:
        time.sleep(1)
        subprocess.run(["docker", "stop", container], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            masters = set(sentinel_masters(settings))
            if len(masters) == 1 and old not in masters:
                break
            time.sleep(0.2)
        time.sleep(3)  # traffic on the new master
    assert len(masters) == 1 and old not in masters, \
        f"no new master elected: {masters}\n" + "\n".join(_sentinel_log_tail(settings))
    earlier = _node_log(container, old)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    # It asks the Sentinels before it starts, so it never runs as a second master.
    new = masters.pop()
    deadline = time.monotonic() + 30
    while len(log := _node_log(container, old)) == len(earlier) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"of {settings.redis.sentinels} Sentinels name" in log[-1] and f"name {new} as the master" in log[-1], log
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    # The old master comes back as a replica of the new one; the deploy does not fight Sentinel.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        role = redis_role(container, check=False)
        if role == "slave":
            break
        time.sleep(0.5)
    assert role == "slave"


def _sentinel_log_tail(settings) -> list[str]:
    """The Sentinels' last lines, for an assertion message: what they decided and why."""
    lines = []
    for sentinel in sentinel_names(settings):
        logs = subprocess.run(["docker", "logs", "--tail", "25", container_of(settings, sentinel)],
                              capture_output=True, text=True)
        lines += [f"{sentinel}: {line}" for line in (logs.stdout + logs.stderr).splitlines()]
    return lines


def _node_log(container: str, node: str) -> list[str]:
    """The lines Redis's node.sh printed, one per start, about which node it takes for the master."""
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    return [line for line in logs.splitlines() if line.startswith(f"node {node}:")]


def test_promoting_a_replica_under_traffic_loses_no_task_and_verify_passes(env_name, settings, client):
    old = primary_of(settings)
    new = next(node for node in postgres_nodes(settings) if node != old)
    with Traffic(client) as traffic:
        time.sleep(1)
        result = run_shipyard("pg-promote", "--env", env_name, "--replica", new)
        time.sleep(2)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Patroni switchover {old} -> {new}" in result.stdout, result.stdout
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    assert roles(settings) == {node: "primary" if node == new else "replica" for node in postgres_nodes(settings)}
    # The environment's own checks agree: the new primary has every other node streaming on
    # its slot (the old primary back as a replica by itself). test_rollout then re-runs the deploy and
    # checks that it changes nothing: the deploy does not fight the promotion.
    verify = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(REPO / "tests/infra/test_components.py"), "-k", "test_postgres__",
                             f"--shipyard-env={env_name}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout[-3000:]
    assert " passed" in verify.stdout and " failed" not in verify.stdout, verify.stdout[-3000:]


def test_a_backup_from_before_a_promotion_restores_what_was_committed_after_it(env_name, settings):
    from .test_backups import add_rows, restored_rows

    backup = run_shipyard("pg-backup", "--env", env_name)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    old = primary_of(settings)
    promoted = run_shipyard("pg-promote", "--env", env_name, "--replica",
                            next(node for node in postgres_nodes(settings) if node != old))
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    rows = add_rows(settings, 6)  # on the new primary's timeline: the WAL archive followed it
    name = backup.stdout.split("backup ")[1].split()[0]
    assert restored_rows(env_name, settings, "--backup", name) == rows


def test_promote_refuses_the_primary_itself_and_unknown_nodes(env_name, settings):
    primary = primary_of(settings)
    same = run_shipyard("pg-promote", "--env", env_name, "--replica", primary)
    assert same.returncode == 2 and "is already the leader" in same.stderr, same.stderr
    unknown = run_shipyard("pg-promote", "--env", env_name, "--replica", "postgres-replica-9")
    assert unknown.returncode == 2 and "has no PostgreSQL node 'postgres-replica-9'" in unknown.stderr
    assert "name one of: postgres, postgres-replica-1" in unknown.stderr


def test_rebuild_is_patronis_reinit_the_replica_streams_again_and_the_leader_is_refused(env_name, settings):
    from tests.patroni_view import healthy_cluster, leader_of
    from tests.waiting import wait_for

    nodes = postgres_nodes(settings)
    leader = leader_of(wait_for("a healthy Patroni cluster", lambda: healthy_cluster(settings, nodes), 120))
    replica = next(n for n in nodes if n != leader)
    refused = run_shipyard("pg-rebuild", "--env", env_name, "--node", leader)
    assert refused.returncode == 2 and leader in refused.stderr, refused.stdout + refused.stderr
    rebuilt = run_shipyard("pg-rebuild", "--env", env_name, "--node", replica)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    after = wait_for("the reinitialised replica streaming again", lambda: healthy_cluster(settings, nodes), 120)
    assert leader_of(after) == leader
    assert roles(settings) == {node: "primary" if node == leader else "replica" for node in nodes}
