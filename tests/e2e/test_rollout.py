"""Rollout behaviour on a real Docker engine, after `make up ENV=ci` (run in this order)."""

import re
import subprocess

from shipyard.controller.releases import live_instance
from shipyard.controller.drills import container_of
from shipyard.lock import environment_lock
from shipyard.components.redis.instances import node_names as redis_nodes

from .conftest import REPO, container_states, redis_role, run_shipyard


def test_rerun_with_nothing_changed_recreates_nothing(env_name):
    before = container_states(f"shipyard-{env_name}")
    result = run_shipyard("up", "--env", env_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing changed" in result.stdout
    assert container_states(f"shipyard-{env_name}") == before


def test_status_and_plan_describe_the_rolled_out_environment(env_name):
    status = run_shipyard("status", "--env", env_name)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    from shipyard.inventory import load_environment

    settings = load_environment(REPO, env_name)
    api, worker = live_instance(settings, "api"), live_instance(settings, "worker")
    for service in ("postgres", "postgres-replica-1", "redis", "redis-sentinel-3", api, worker, "edge"):
        # An instance's row (a component's heading is its name alone).
        row = next((line for line in lines if line.split()[:1] == [service] and len(line.split()) > 1), "")
        assert " healthy " in row, (service, status.stdout)
    # The data tier's own view: Patroni's leader.
    assert any(line.split()[0] in ("postgres", "postgres-replica-1") and "Patroni leader, running" in line
               for line in lines if len(line.split()) > 1), status.stdout
    assert "agrees; 3 of 3 Sentinels" in status.stdout and "drift from the render: none" in status.stdout
    worker_row = next(line for line in lines if line.split()[:1] == [worker] and " healthy " in line)
    assert re.search(r"queue: \d+ queued \(oldest \d+ s\), \d+ scheduled, \d+ running, \d+ dead", worker_row), worker_row
    plan = run_shipyard("plan", "--env", env_name)
    assert plan.returncode == 0 and plan.stdout.rstrip().endswith("nothing to do"), plan.stdout + plan.stderr
    changed = run_shipyard("plan", "--env", env_name, env_extra={"SHIPYARD_REDIS__QUORUM": "3"})
    assert "redis-sentinel-1: environment.REDIS_QUORUM: '2' -> '3'" in changed.stdout, changed.stdout
    assert "redis: " not in changed.stdout  # the Redis nodes keep running


def test_plan_sees_a_container_changed_by_hand_and_the_next_deploy_puts_it_back(env_name, tmp_path):
    """Drift the render cannot show: the node exporter recreated by hand from another definition
    (an extra variable, through compose itself) — same files, another container."""
    from shipyard import commands
    from shipyard.inventory import load_environment

    settings = load_environment(REPO, env_name)
    override = tmp_path / "by-hand.yaml"
    override.write_text("services:\n  node-exporter:\n    environment:\n      BY_HAND: '1'\n")
    project_dir = commands.project_dir(settings.deploy_root, env_name)
    by_hand = subprocess.run(commands.compose(project_dir, settings.compose_project, "-f", str(override), "up", "-d",
                                              "--no-deps", "node-exporter"), capture_output=True, text=True)
    assert by_hand.returncode == 0, by_hand.stderr
    plan = run_shipyard("plan", "--env", env_name)
    assert "node-exporter-1: not made from the deployed definition (changed outside the deploy)" in plan.stdout, plan.stdout
    repaired = run_shipyard("up", "--env", env_name)
    assert repaired.returncode == 0 and "node-exporter-1: compose config changed" in repaired.stdout, repaired.stdout
    assert run_shipyard("plan", "--env", env_name).stdout.rstrip().endswith("nothing to do")


def test_a_second_checkout_with_other_secrets_is_refused_before_touching_anything(env_name, tmp_path):
    """Another clone (here: a copy of this one without its per-machine secrets) generates its own
    secrets for the environment; deploying them would lock the platform out of its own data."""
    import shutil
    import sys

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    clone = tmp_path / "clone"
    for rel in files:
        if (REPO / rel).is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, clone / rel)
    shutil.copytree(REPO / ".shipyard" / "wheelhouse", clone / ".shipyard" / "wheelhouse")  # no re-download
    before = container_states(f"shipyard-{env_name}")
    result = subprocess.run([sys.executable, "-m", "shipyard", "up", "--env", env_name], cwd=clone,
                            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                 "HOME": str(tmp_path), "SHIPYARD_AGE_IDENTITY_DIR": str(tmp_path / "ids")},
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "runs with other secrets than this checkout holds" in output and "nothing was changed" in output
    assert "postgres_password" in output and f"secrets/{env_name}/" in output
    assert container_states(f"shipyard-{env_name}") == before
    # The environment still runs with its own secrets: a deploy from this checkout changes nothing.
    again = run_shipyard("up", "--env", env_name)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr


def test_second_concurrent_deploy_is_refused_with_a_clear_message(env_name):
    with environment_lock(REPO, env_name):
        result = run_shipyard("up", "--env", env_name)
    assert result.returncode == 2
    assert "another deploy holds the lock" in result.stderr and "LOCK_WAIT" in result.stderr


def test_a_deploy_from_another_machine_holding_the_host_lock_is_refused_until_it_is_cleared(env_name):
    from pathlib import Path

    from shipyard.apply.hostlock import lock_file
    from shipyard.inventory import load_environment

    lock = Path(lock_file(load_environment(REPO, env_name).deploy_root, env_name))
    before = container_states(f"shipyard-{env_name}")
    lock.write_text("controller build-server-2 pid 4242 checkout /srv/shipyard\n")
    try:
        result = run_shipyard("up", "--env", env_name)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "another deploy holds the environment's lock (controller build-server-2 pid 4242" in output
        assert f"remove {lock}" in output
        assert container_states(f"shipyard-{env_name}") == before
    finally:
        lock.unlink()
    result = run_shipyard("up", "--env", env_name)
    assert result.returncode == 0 and "nothing changed" in result.stdout
    assert not lock.exists()  # released by the deploy that took it


def test_invalid_setting_stops_before_touching_the_host(env_name):
    before = container_states(f"shipyard-{env_name}")
    result = run_shipyard("up", "--env", env_name, env_extra={"SHIPYARD_PORTS__EDGE_HTTP": "eighty"})
    assert result.returncode == 2
    assert "environment variable SHIPYARD_PORTS__EDGE_HTTP" in result.stderr
    assert "no host was touched" in result.stderr
    assert container_states(f"shipyard-{env_name}") == before


def test_a_port_another_process_holds_stops_the_deploy_before_it_touches_anything(env_name):
    import socket

    before = container_states(f"shipyard-{env_name}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_shipyard("up", "--env", env_name, env_extra={"SHIPYARD_PORTS__EDGE_HTTP": str(port)})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"ports.edge_http (edge) publishes 127.0.0.1:{port}, which a process of the host already holds" in output
    assert "nothing was changed" in output and "fix: stop what holds them" in output
    assert output.count(f"127.0.0.1:{port}, which") == 1  # said once, not repeated by pyinfra
    assert container_states(f"shipyard-{env_name}") == before
    again = run_shipyard("up", "--env", env_name).stdout
    assert "nothing changed" in again and "changed tiers" not in again  # the files were not touched


def test_failed_health_gate_prints_logs_restores_what_was_healthy_then_a_fixed_rerun_recovers(env_name):
    # 60 GB of shared buffers cannot be mapped on this machine: PostgreSQL exits at start.
    broken = {"SHIPYARD_POSTGRES__SHARED_BUFFERS_MB": "60000", "SHIPYARD_HEALTH__DATA_TIMEOUT_S": "20"}
    result = run_shipyard("up", "--env", env_name, env_extra=broken)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    # Patroni's dynamic configuration: no container is re-created; the first replica restarted
    # with it does not start, the previous configuration is PATCHed back, and it runs again.
    assert "put back to what ran before, and every node runs again" in output, output[-3000:]
    assert "Patroni refused POST /restart: 503" in output, output[-3000:]
    health = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}",
                             f"shipyard-{env_name}-postgres-1", f"shipyard-{env_name}-postgres-replica-1-1"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert health == ["healthy", "healthy"]
    fixed = run_shipyard("up", "--env", env_name)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_official_source_without_a_registry_stops_plainly_before_touching_containers(env_name):
    import socket

    import pytest

    try:
        socket.getaddrinfo("registry-1.docker.io", 443)
        pytest.skip("a registry may answer from this machine")
    except OSError:
        pass
    before = container_states(f"shipyard-{env_name}")
    # The first image it lacks stops it, before any build (the nodes' image is built FROM the
    # pulled postgres image) and before any container.
    result = run_shipyard("up", "--env", env_name, env_extra={"SHIPYARD_IMAGES__SOURCE": "official"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "no registry answers" in output and "set images.source to 'local'" in output
    assert container_states(f"shipyard-{env_name}") == before


def _sentinel_view(settings) -> list[dict[str, str]]:
    """What each Sentinel says about the master (SENTINEL MASTER, as a dict)."""

    from shipyard.components.redis.instances import sentinel_names as redis_sentinels

    views = []
    for sentinel in redis_sentinels(settings):
        out = subprocess.run(["docker", "exec", container_of(settings, sentinel), "sh",
                              "/usr/local/etc/redis-sentinel/cli.sh", "sentinel", "master", settings.redis.master_name],
                             capture_output=True, text=True, check=True).stdout.split("\n")
        views.append(dict(zip(out[::2], out[1::2])))
    return views


def _after_a_failover(settings) -> str:
    """The master the Sentinels name, made sure not to be `redis` (the one deployed as master)."""
    from shipyard.components.redis.failover import redis_failover

    if _sentinel_view(settings)[0]["ip"] == "redis":
        redis_failover(settings)
    master = _sentinel_view(settings)[0]["ip"]
    assert master != "redis"
    return master


def _masters(settings) -> list[str]:
    return [node for node in redis_nodes(settings) if redis_role(container_of(settings, node)) == "master"]


def test_a_sentinel_setting_change_is_applied_keeps_what_sentinel_learned_and_leaves_redis_running(env_name):
    from shipyard.inventory import load_environment

    settings = load_environment(REPO, env_name)
    _after_a_failover(settings)
    before, project = _sentinel_view(settings), f"shipyard-{env_name}"
    # The data tier's one-shot (postgres-setup, idempotent) runs again with any change of the
    # tier: the deploy converges a tier as a whole. Every server must keep running.
    from shipyard import topology
    one_shots = {f"/{project}-{i.name}-1" for i in topology.build(settings).instances if i.service.one_shot}
    nodes_before = {n: s for n, s in container_states(project).items() if "sentinel" not in n and n not in one_shots}
    changed = run_shipyard("up", "--env", env_name, env_extra={"SHIPYARD_REDIS__DOWN_AFTER_MS": "4000"})
    assert changed.returncode == 0, changed.stdout + changed.stderr
    after = _sentinel_view(settings)
    for old, new in zip(before, after):
        assert new["down-after-milliseconds"] == "4000"
        assert (new["ip"], new["port"], new["config-epoch"]) == (old["ip"], old["port"], old["config-epoch"])
        assert new["num-other-sentinels"] == "2" and new["quorum"] == str(settings.redis.quorum)
    # Sentinels have a config dir of their own: the Redis nodes (and everything else) kept running.
    assert {n: s for n, s in container_states(project).items()
            if "sentinel" not in n and n not in one_shots} == nodes_before
    back = run_shipyard("up", "--env", env_name)
    assert back.returncode == 0, back.stdout + back.stderr
    assert {v["down-after-milliseconds"] for v in _sentinel_view(settings)} == {str(settings.redis.down_after_ms)}


def test_after_a_failover_recreated_or_cold_started_redis_nodes_bring_back_no_second_master(env_name):
    from shipyard.inventory import load_environment

    settings = load_environment(REPO, env_name)
    master = _after_a_failover(settings)
    # Every Redis node re-created at once: each asks the Sentinels before it starts.
    changed = run_shipyard("up", "--env", env_name, env_extra={"SHIPYARD_REDIS__MAXMEMORY_MB": "96"})
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert _masters(settings) == [master]
    # Cold start (data kept): nodes and Sentinels start together; the nodes wait for the Sentinels.
    # The Sentinels may fail over once more meanwhile (the master was down past down_after_ms
    # while the stack stopped or started), which is theirs to decide: what must hold is one
    # master, the one every Sentinel names.
    assert run_shipyard("down", "--env", env_name).returncode == 0
    cold = run_shipyard("up", "--env", env_name)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    masters = _masters(settings)
    assert len(masters) == 1, masters
    assert {v["ip"] for v in _sentinel_view(settings)} == set(masters)


def test_postgres_setting_changes_reach_every_node_without_recreating_one(env_name):
    """A PostgreSQL parameter is the cluster's dynamic configuration: `make plan` says it needs a
    restart, the deploy PATCHes it and restarts node by node (the leader by a switchover when
    raised; in place first when lowered), and no container is re-created."""
    from shipyard.components.postgres.instances import node_names as postgres_nodes
    from shipyard.components.postgres.roles import ask
    from shipyard.inventory import load_environment
    from tests.patroni_view import healthy_cluster
    from tests.waiting import wait_for

    settings = load_environment(REPO, env_name)
    nodes = postgres_nodes(settings)

    def started() -> dict[str, str]:
        ids = [container_of(settings, node) for node in nodes]
        return dict(zip(nodes, subprocess.run(["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", *ids],
                                              capture_output=True, text=True, check=True).stdout.splitlines()))

    # Raised above what runs (a run stopped half-way may have left it raised), then back down.
    raised = str(int(ask(settings, nodes[0], "SHOW max_connections")) + 20)
    for max_connections in (raised, str(settings.postgres.max_connections)):
        extra = {"SHIPYARD_POSTGRES__MAX_CONNECTIONS": max_connections}
        plan = run_shipyard("plan", "--env", env_name, env_extra=extra)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "max_connections" in plan.stdout and "restart" in plan.stdout, plan.stdout
        before = started()  # a re-created container has another id, a restarted one another start
        changed = run_shipyard("up", "--env", env_name, env_extra=extra)
        assert changed.returncode == 0, changed.stdout + changed.stderr
        assert "max_connections" in changed.stdout, changed.stdout[-3000:]
        assert started() == before, "a node's container was re-created or restarted"
        assert {node: ask(settings, node, "SHOW max_connections") for node in nodes} == \
            {node: max_connections for node in nodes}
        wait_for("every replica streaming again", lambda: healthy_cluster(settings, nodes), 60)
