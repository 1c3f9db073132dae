"""Secret rotation on the rolled-out environment, under task traffic: the PostgreSQL and Redis
passwords change in the running servers (no server restarts), the API and workers take the new
values from Vault without a restart (ci's backend), the old values are refused afterwards, no
request fails, and every accepted task is processed."""

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import requests

from shipyard import commands
from shipyard.controller.releases import live_instance
from shipyard.components.postgres.roles import primary_of, roles
from shipyard.inventory import load_environment
from shipyard.secretstore import PREVIOUS_SUFFIX, fingerprints, load_or_create, parse_fingerprints, rotate
from shipyard import topology
from tests.drill_traffic import Traffic, api_client, token_for, wait_all_processed

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


# ci's secrets backend is Vault: the API and workers read these from their KV copies, kept current
# by their credential keepers; the servers take the passwords live. Nothing is recreated.
ROTATED = ("redis_password", "postgres_password", "pg_issuer_password", "jwt_signing_key", "consul_token_api")
READ_FROM_VAULT = ("redis_password", "jwt_signing_key", "consul_token_api")


def test_rotating_each_secret_under_traffic_restarts_nothing_and_loses_no_task_or_request(env_name, settings):
    client = api_client(settings)  # its token signed before the key set's rotation, used throughout
    api, worker = live_instance(settings, "api"), live_instance(settings, "worker")
    issuer = settings.app.db_issuer_role
    old = {"redis": _secret(settings, "redis/redis_auth.conf"), "superuser": _secret(settings, "postgres/postgres_password"),
           "issuer": _secret(settings, "db-setup/issuer_password"), "consul": _secret(settings, "consul-setup/consul_token_api"),
           "jwt": load_or_create(REPO, env_name)["jwt_signing_key"].value}
    before = _by_service(settings)
    outputs, took = [], {}
    with Traffic(client) as traffic:
        for name in ROTATED:
            started = time.monotonic()
            result = run_shipyard("secrets-rotate", "--env", env_name, "--name", name)
            took[name] = time.monotonic() - started
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert f"rotated {name}" in result.stdout
            if name in READ_FROM_VAULT:  # the deploy saw every running reader take it before the old went
                assert "hold the new" in result.stdout and name in result.stdout, result.stdout[-3000:]
            outputs.append(result.stdout + result.stderr)
    print(f"rotation seconds, command to done: {', '.join(f'{n} {t:.1f}' for n, t in took.items())}")
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    assert traffic.refused == 0, f"{traffic.refused} requests failed during the rotations"

    after = _by_service(settings)
    unchanged = (*SERVERS, api, worker)
    assert {s: after[s] for s in unchanged} == {s: before[s] for s in unchanged}  # no container restarted
    new = {"redis": _secret(settings, "redis/redis_auth.conf"), "superuser": _secret(settings, "postgres/postgres_password"),
           "issuer": _secret(settings, "db-setup/issuer_password"), "consul": _secret(settings, "consul-setup/consul_token_api"),
           "jwt": load_or_create(REPO, env_name)["jwt_signing_key"].value}
    assert all(new[k] != old[k] for k in old)
    for container in (f"{settings.compose_project}-redis-1", f"{settings.compose_project}-redis-replica-1-1"):
        assert _redis_login(container, new["redis"]) and not _redis_login(container, old["redis"]), container
    assert _pg_login(settings, settings.postgres.user, new["superuser"])
    assert not _pg_login(settings, settings.postgres.user, old["superuser"])
    # The database root credential Vault uses: new in, old out, and Vault's engine still issues users
    # (the API served every request above, on users it kept getting).
    assert _pg_login(settings, issuer, new["issuer"]) and not _pg_login(settings, issuer, old["issuer"])
    bind, port = topology.build(settings).published(settings.hosts[0], "consul-1")
    key = f"http://{bind}:{port}/v1/kv/shipyard/{env_name}/shared/runtime"
    assert requests.get(key, headers={"X-Consul-Token": old["consul"]}, timeout=5).status_code == 403
    assert requests.get(key, headers={"X-Consul-Token": new["consul"]}, timeout=5).status_code == 200
    # The key set: a token of the old signing key and one of the new are both accepted.
    assert client.get(f"{client.base}/v1/tasks", timeout=5).status_code == 200
    fresh = requests.get(f"{client.base}/v1/tasks", headers={"Authorization": "Bearer " + token_for(settings, "drill")},
                         timeout=5)
    assert fresh.status_code == 200, fresh.text
    # Every process reads its config with the new Consul token: a change reaches all of them.
    changed = run_shipyard("config-set", "--env", env_name, "--key", "log_level", "--value", "WARNING")
    assert changed.returncode == 0 and "applied by all" in changed.stdout, changed.stdout[-2000:] + changed.stderr[-2000:]
    run_shipyard("config-set", "--env", env_name, "--key", "log_level", "--value", "INFO")
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
    # Every replica (pgBackRest's archive needs no replication connection).
    expected = settings.postgres.replicas
    deadline = time.monotonic() + 90
    while _streaming_replicas(settings, primary) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _streaming_replicas(settings, primary) == expected
