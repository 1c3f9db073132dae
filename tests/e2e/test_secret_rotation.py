"""Secret rotation on the rolled-out environment, under task traffic: the PostgreSQL and Redis
passwords change in the running servers (no server restarts), the containers that read them
are recreated, the old values are refused afterwards, and every accepted task is processed."""

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests

from shipyard import commands
from shipyard.controller.releases import live_instance
from shipyard.components.postgres.promote import primary_of, roles
from shipyard.inventory import load_environment
from shipyard.secretstore import PREVIOUS_SUFFIX, fingerprints, load_or_create, parse_fingerprints, rotate
from shipyard import topology
from tests.drill_traffic import Traffic, api_client, wait_all_processed

from .conftest import REPO, container_states, run_shipyard

SERVERS = ("postgres", "postgres-replica-1", "redis", "redis-replica-1",
           "redis-sentinel-1", "redis-sentinel-2", "redis-sentinel-3")


@pytest.fixture(scope="module")
def settings(env_name):
    return load_environment(REPO, env_name)


def _secret(settings, path: str) -> str:
    text = Path(commands.project_dir(settings.deploy_root, settings.name), "secrets", path).read_text()
    return text.split()[-1] if text.startswith("requirepass") else text.strip()  # `requirepass V` or V


def _by_service(settings) -> dict[str, str]:
    """compose service → its container's id + start time."""
    states = container_states(settings.compose_project)
    prefix = f"{settings.compose_project}-"
    return {name.lstrip("/").removeprefix(prefix).rsplit("-", 1)[0]: state for name, state in states.items()}


def _pg_login(settings, user: str, password: str) -> bool:
    bind, port = topology.build(settings).published(settings.hosts[0], "postgres")
    try:
        psycopg.connect(host=bind, port=port, dbname=settings.postgres.database, user=user, password=password,
                        connect_timeout=5).close()
        return True
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc), exc
        return False


def _redis_login(container: str, password: str) -> bool:
    out = subprocess.run(["docker", "exec", "-i", "-e", "REDISCLI_AUTH", container, "redis-cli", "--no-auth-warning",
                          "ping"], capture_output=True, text=True, env={"REDISCLI_AUTH": password, "PATH": "/usr/bin:/bin"})
    return out.stdout.strip() == "PONG"


def _streaming_replicas(settings, primary: str) -> int:
    out = subprocess.run(["docker", "exec", f"{settings.compose_project}-{primary}-1", "bash", "-c",
                          "PGPASSWORD=$(cat /run/secrets/postgres_password) psql -h /var/run/postgresql -U $PG_SUPERUSER "
                          "-d postgres -XAtc \"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'\""],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def test_rotating_the_postgres_and_redis_passwords_under_traffic_restarts_no_server_and_loses_no_task(env_name, settings):
    client = api_client(settings)
    api, worker = live_instance(settings, "api"), live_instance(settings, "worker")
    old = {"redis": _secret(settings, "redis/redis_auth.conf"), "superuser": _secret(settings, "postgres/postgres_password"),
           "app": _secret(settings, f"{api}/postgres_password")}
    before = _by_service(settings)
    outputs = []
    with Traffic(client) as traffic:
        for name in ("redis_password", "postgres_password", "pg_app_password"):
            result = run_shipyard("secrets-rotate", "--env", env_name, "--name", name)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert f"rotated {name}" in result.stdout
            outputs.append(result.stdout + result.stderr)
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts

    after = _by_service(settings)
    assert {s: after[s] for s in SERVERS} == {s: before[s] for s in SERVERS}  # no server restarted
    assert after[api] != before[api] and after[worker] != before[worker]  # the clients were recreated
    new = {"redis": _secret(settings, "redis/redis_auth.conf"), "superuser": _secret(settings, "postgres/postgres_password"),
           "app": _secret(settings, f"{api}/postgres_password")}
    assert all(new[k] != old[k] for k in old)
    for container in (f"{settings.compose_project}-redis-1", f"{settings.compose_project}-redis-replica-1-1"):
        assert _redis_login(container, new["redis"]) and not _redis_login(container, old["redis"]), container
    assert _pg_login(settings, settings.postgres.user, new["superuser"])
    assert not _pg_login(settings, settings.postgres.user, old["superuser"])
    assert _pg_login(settings, "tasks_app", new["app"]) and not _pg_login(settings, "tasks_app", old["app"])
    # Nothing of the old values is left, and no value was printed.
    assert not list((REPO / "secrets" / env_name).glob(f"*{PREVIOUS_SUFFIX}"))
    project = Path(commands.project_dir(settings.deploy_root, env_name))
    assert not list(project.glob("secrets/*/*.retiring"))
    recorded = parse_fingerprints((project / "secrets" / "fingerprints").read_text())
    assert recorded == fingerprints(load_or_create(REPO, env_name, generate_missing=False))
    for text in outputs:
        assert not any(value in text for value in (*old.values(), *new.values()))


def test_an_interrupted_rotation_is_finished_by_a_plain_deploy_and_replicas_stream_with_the_new_password(
        env_name, settings):
    # What `make secrets-rotate` leaves when killed right after writing the new value.
    rotate(REPO, env_name, "replication_password")
    result = run_shipyard("up", "--env", env_name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rotated replication_password" in result.stdout
    assert not (REPO / "secrets" / env_name / f"replication_password{PREVIOUS_SUFFIX}").exists()
    # A replica that connects again now (a restart) must authenticate with the new password.
    # Which node is the primary depends on the drills that ran before (a promotion).
    primary = primary_of(settings)
    replica = next(node for node, role in roles(settings).items() if role == "replica")
    subprocess.run(["docker", "restart", f"{settings.compose_project}-{replica}-1"], check=True, capture_output=True)
    deadline = time.monotonic() + 90
    while _streaming_replicas(settings, primary) < 2 and time.monotonic() < deadline:  # the replica + WAL archive
        time.sleep(0.5)
    assert _streaming_replicas(settings, primary) == 2


def test_rotating_a_services_consul_token_revokes_the_old_one_and_every_process_reads_with_the_new(
        env_name, settings):
    worker = live_instance(settings, "worker")
    old = _secret(settings, f"{worker}/consul_token")
    result = run_shipyard("secrets-rotate", "--env", env_name, "--name", "consul_token_worker")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new = _secret(settings, f"{worker}/consul_token")
    assert new != old and old not in result.stdout + result.stderr
    bind, port = topology.build(settings).published(settings.hosts[0], "consul-1")
    key = f"http://{bind}:{port}/v1/kv/shipyard/{env_name}/shared/runtime"
    assert requests.get(key, headers={"X-Consul-Token": old}, timeout=5).status_code == 403
    assert requests.get(key, headers={"X-Consul-Token": new}, timeout=5).status_code == 200
    # Every process reads its config with its (new) token: a change reaches all of them.
    changed = run_shipyard("config-set", "--env", env_name, "--key", "log_level", "--value", "WARNING")
    assert changed.returncode == 0 and "applied by all" in changed.stdout, changed.stdout[-2000:] + changed.stderr[-2000:]
    run_shipyard("config-set", "--env", env_name, "--key", "log_level", "--value", "INFO")
