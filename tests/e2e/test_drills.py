"""Failure drills on the rolled-out environment, while tasks are being created: the Redis
master goes away (a Sentinel failover, then the master container stopped), a PostgreSQL
replica loses its primary, a replica is promoted. Every task the API accepted is processed,
and the environment converges back."""

import subprocess
import sys
import time

import pytest

from shipyard.controller.drills import container_of
from shipyard.components.postgres.promote import primary_of, roles
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


def _scripts_only(settings, instead: str) -> None:
    """The scripts mode's own behaviour: under Patroni the same failure is Patroni's to handle."""
    if settings.postgres.ha == "patroni":
        pytest.skip(f"postgres.ha: scripts only; under patroni: {instead}")


def _node_log(container: str, node: str) -> list[str]:
    """The lines node.sh printed, one per start, about which node it takes for the master."""
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stdout
    return [line for line in logs.splitlines() if line.startswith(f"node {node}:")]


def _health(settings, node: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", container_of(settings, node), "bash",
                           "/etc/postgresql/shipyard/health.sh", node], capture_output=True, text=True)


def test_a_replica_that_cannot_reach_the_primary_fails_its_health_check_naming_both(settings):
    _scripts_only(settings, "Patroni's health is its REST API; a replica without a leader is its election "
                            "(tests/e2e/test_patroni_failover.py, test_patroni_drills.py)")
    primary = primary_of(settings)
    replica = next(node for node in postgres_nodes(settings) if node != primary)
    container = container_of(settings, primary)
    subprocess.run(["docker", "stop", container], check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = _health(settings, replica)
            if health.returncode != 0:
                break
            time.sleep(0.2)
    finally:
        subprocess.run(["docker", "start", container], check=True, capture_output=True)
    assert health.returncode == 1
    assert replica in health.stdout and f"{primary}:5432" in health.stdout, health.stdout
    deadline = time.monotonic() + 60
    while _health(settings, replica).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _health(settings, replica).returncode == 0, "the replica did not stream again once the primary was back"


def test_promoting_a_replica_under_traffic_loses_no_task_and_verify_passes(env_name, settings, client):
    old = primary_of(settings)
    new = next(node for node in postgres_nodes(settings) if node != old)
    with Traffic(client) as traffic:
        time.sleep(1)
        result = run_shipyard("pg-promote", "--env", env_name, "--replica", new)
        time.sleep(2)
    assert result.returncode == 0, result.stdout + result.stderr
    # scripts: "primary A -> B"; patroni: "Patroni switchover A -> B"
    assert f"primary {old} -> {new}" in result.stdout or f"switchover {old} -> {new}" in result.stdout, result.stdout
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    assert roles(settings) == {node: "primary" if node == new else "replica" for node in postgres_nodes(settings)}
    # The environment's own checks agree: the new primary has every other node streaming on
    # its slot (the old primary rebuilt as a replica). test_rollout then re-runs the deploy and
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


def test_when_the_primary_dies_promotion_needs_force_then_the_platform_carries_on(env_name, settings, client):
    _scripts_only(settings, "a dead leader is replaced by Patroni itself, no FORCE (tests/e2e/test_patroni_failover.py)")
    dead = primary_of(settings)
    survivor = next(node for node in postgres_nodes(settings) if node != dead)
    # `docker stop -t 0`: killed at once, and not restarted by its restart policy (a dead host).
    subprocess.run(["docker", "stop", "-t", "0", container_of(settings, dead)], check=True, capture_output=True)
    refused = run_shipyard("pg-promote", "--env", env_name, "--replica", survivor)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"no PostgreSQL node accepts writes (down: {dead})" in refused.stderr and "FORCE=1" in refused.stderr
    forced = run_shipyard("pg-promote", "--env", env_name, "--replica", survivor, "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert roles(settings) == {node: "primary" if node == survivor else "replica" for node in postgres_nodes(settings)}
    with Traffic(client) as traffic:
        time.sleep(3)
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts


def test_a_node_with_a_primarys_data_refuses_to_start_next_to_the_primary_until_rebuilt(env_name, settings):
    _scripts_only(settings, "an old leader is rewound by Patroni itself (tests/e2e/test_patroni_failover.py); "
                            "pg-rebuild is Patroni's reinit (test_rebuild_under_patroni_is_a_reinit_...)")
    primary = primary_of(settings)
    node = next(n for n in postgres_nodes(settings) if n != primary)
    container = container_of(settings, node)
    image = subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", container], capture_output=True,
                           text=True, check=True).stdout.strip()
    subprocess.run(["docker", "stop", container], check=True, capture_output=True)
    # What an old primary's data looks like: no standby.signal.
    subprocess.run(["docker", "run", "--rm", "--volumes-from", container, "--user", "postgres", "--entrypoint", "rm",
                    image, "/var/lib/postgresql/data/pgdata/standby.signal"], check=True, capture_output=True)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    deadline, logs = time.monotonic() + 30, ""
    while "refusing to start as a second primary" not in logs and time.monotonic() < deadline:
        time.sleep(0.5)
        logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr
    assert f"node {node}: refusing to start as a second primary: {primary} already accepts writes" in logs
    assert f"make pg-rebuild ENV={env_name} NODE={node}" in logs
    assert roles(settings)[primary] == "primary" and roles(settings)[node] == "down"
    rebuilt = run_shipyard("pg-rebuild", "--env", env_name, "--node", node)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert roles(settings)[node] == "replica"


def test_promote_refuses_the_primary_itself_and_unknown_nodes(env_name, settings):
    primary = primary_of(settings)
    same = run_shipyard("pg-promote", "--env", env_name, "--replica", primary)
    already = "is already the leader" if settings.postgres.ha == "patroni" else "is already the primary"
    assert same.returncode == 2 and already in same.stderr, same.stderr
    unknown = run_shipyard("pg-promote", "--env", env_name, "--replica", "postgres-replica-9")
    assert unknown.returncode == 2 and "has no PostgreSQL node 'postgres-replica-9'" in unknown.stderr
    assert "name one of: postgres, postgres-replica-1" in unknown.stderr


def test_rebuild_under_patroni_is_a_reinit_the_replica_streams_again_and_the_leader_is_refused(env_name, settings):
    if settings.postgres.ha != "patroni":
        pytest.skip("postgres.ha: patroni only (scripts: the test above)")
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
