"""Vault (OpenBao) as the deploy runs it on the rolled-out environment: initialised, unsealed and
bootstrapped by `make up` (Component.live_setup), no root token left, each service's AppRole
limited to its own paths, dynamic PostgreSQL users that work against the deployed database and
end with their lease, nothing secret in the container's environment or the audit log, and a
restarted (sealed) server unsealed by the next `make up`."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import hvac
import hvac.exceptions
import psycopg
import pytest

from shipyard import secretstore
from shipyard.components import vault
from shipyard.components.vault import bootstrap, setup
from shipyard.controller.drills import container_of
from shipyard.inventory import load_environment

from tests.drill_traffic import Traffic, api_client, wait_all_processed

from .conftest import REPO, run_shipyard


@pytest.fixture(scope="module")
def settings(env_name):
    settings = load_environment(REPO, env_name)
    if not settings.vault.enabled:
        pytest.skip("vault.enabled is false")
    return settings


@pytest.fixture(scope="module")
def ca_file(settings):
    ca = secretstore.read_held(REPO, settings.name, "vault_ca_cert")
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as handle:
        handle.write(ca.value)
        handle.flush()
        yield handle.name


@pytest.fixture(scope="module")
def deployer(settings, ca_file):
    """A client logged in as the deploy's own AppRole (as `make up` does)."""
    address = setup.server_addresses(settings)[0][1]
    client = bootstrap.client(address, ca_file)
    bootstrap.login_deployer(client, secretstore.read_held(REPO, settings.name, setup.DEPLOYER).value)
    yield client
    bootstrap.revoke_self(client)


def _service_client(deployer, ca_file, service: str) -> hvac.Client:
    """Log in as ``service`` the way a service will: role-id, and a wrapped single-use secret-id."""
    role_id, wrapped = bootstrap.issue_secret_id(deployer, service)
    secret_id = bootstrap.client(deployer.url, ca_file, wrapped).sys.unwrap()["data"]["secret_id"]
    with pytest.raises(hvac.exceptions.VaultError):  # single use: unwrapped once only
        bootstrap.client(deployer.url, ca_file, wrapped).sys.unwrap()
    client = bootstrap.client(deployer.url, ca_file)
    client.auth.approle.login(role_id=role_id, secret_id=secret_id)
    return client


def test_the_deploy_left_every_server_unsealed_and_no_root_token(settings):
    status = run_shipyard("vault-status", "--env", settings.name)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "unsealed, leader" in status.stdout
    store = REPO / "secrets" / settings.name
    assert (store / "vault_unseal_keys.age").exists() and (store / "vault_deployer.age").exists()
    assert not (store / "vault_root_token.age").exists()  # revoked and deleted after the first bootstrap


def test_each_service_reads_its_own_secrets_only(settings, deployer, ca_file):
    api = _service_client(deployer, ca_file, "api")
    own = api.secrets.kv.v2.read_secret_version(path="services/api/jwt_signing_key", mount_point="secret",
                                                raise_on_deleted_version=True)
    assert own["data"]["data"]["value"] == secretstore.load_or_create(REPO, settings.name)["jwt_signing_key"].value
    for forbidden in ("services/worker/consul_token", "services/migrate/postgres_password",
                      "services/db-setup/postgres_admin_password"):
        with pytest.raises(hvac.exceptions.Forbidden):
            api.secrets.kv.v2.read_secret_version(path=forbidden, mount_point="secret", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        api.read(f"database/creds/{settings.app.db_migrator_role}")
    with pytest.raises(hvac.exceptions.Forbidden):
        api.secrets.kv.v2.create_or_update_secret(path="services/api/jwt_signing_key", secret={"value": "x"},
                                                  mount_point="secret")


def test_a_dynamic_database_user_works_on_the_deployed_postgres_and_ends_with_its_lease(settings, deployer, ca_file):
    worker = _service_client(deployer, ca_file, "worker")
    creds = worker.read(f"database/creds/{settings.app.db_app_role}")
    user, password = creds["data"]["username"], creds["data"]["password"]
    conninfo = dict(host="127.0.0.1", port=settings.ports.postgres, dbname=settings.postgres.database,
                    user=user, password=password, connect_timeout=5)
    # The published port may lead to a replica by now (the drills promote): privileges are asked,
    # not tried, so the answer holds on any node.
    with psycopg.connect(**conninfo) as conn:
        assert conn.execute("SELECT current_user, count(*) >= 0 FROM tasks").fetchone() == (settings.app.db_app_role, True)
        assert conn.execute("SELECT has_table_privilege('tasks', 'INSERT, UPDATE, DELETE'), "
                            "has_schema_privilege('public', 'CREATE'), has_database_privilege(current_database(), "
                            "'CREATE')").fetchone() == (True, False, False)
    # The worker's token revoked (as when it expires): its leases go with it, and the user with them.
    worker.auth.token.revoke_self()
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(**conninfo).close()
        except psycopg.OperationalError as err:
            assert "does not exist" in str(err) or "password authentication failed" in str(err), err
            break
        assert time.monotonic() < deadline, f"{user} can still log in 30 s after its lease ended"
        time.sleep(0.5)


def test_nothing_secret_in_the_container_environment_or_the_audit_log(settings):
    container = container_of(settings, "vault-1")
    inspect = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True,
                                        check=True).stdout)[0]
    values = [s.value for s in secretstore.load_or_create(REPO, settings.name).values() if s.value]  # "": a part that is off
    held = json.loads(secretstore.read_held(REPO, settings.name, setup.UNSEAL_KEYS).value)
    environment = "\n".join(inspect["Config"]["Env"])
    assert not any(v in environment for v in values + held)
    audit = subprocess.run(["docker", "exec", container, "cat", "/openbao/logs/audit.log"], capture_output=True,
                           text=True, check=True).stdout
    assert audit.count("\n") > 10  # the deploy's requests are on record
    assert not any(v in audit for v in values + held)


def _running(settings, service: str) -> list[tuple[str, str]]:
    """(instance, container id) of every running container of ``service`` (either colour)."""
    from shipyard import topology

    found = []
    for inst in topology.build(settings).instances:
        if inst.service.name == service:
            try:
                found.append((inst.name, container_of(settings, inst.name)))
            except Exception:  # noqa: BLE001 - the idle colour: not running
                continue
    return found


def _in(container: str, code: str) -> str:
    return subprocess.run(["docker", "exec", container, "python", "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


# What the process holds, read in its container: the user name only (the file holds the password).
_USERNAME = "import json; print(json.load(open('/run/taskplatform-vault/postgres.json'))['username'])"


def test_the_api_and_workers_run_on_dynamic_users_with_what_the_deploy_handed_them(settings):
    """secrets.backend vault: each API and worker container logged in with its role-id (config)
    and the single-use wrapped secret-id it was handed (deleted once used), keeps its token in its
    own hand-off directory, and connects to PostgreSQL as a user of Vault's database engine."""
    if settings.secrets.backend != "vault":
        pytest.skip("secrets.backend is not vault")
    for service in ("api", "worker"):
        running = _running(settings, service)
        assert running, f"no {service} container runs"
        for instance, container in running:
            env = dict(e.split("=", 1) for e in json.loads(subprocess.run(
                ["docker", "inspect", container], capture_output=True, text=True, check=True).stdout)[0]["Config"]["Env"])
            assert env["TASKS_VAULT_ROLE_ID"] == f"service-{service}"
            handoff = Path(settings.deploy_root) / f".{settings.name}.handoff" / "vault" / instance
            # The CA, the token it keeps and the versions of the KV copies it holds (held.json); a
            # wrapped secret-id only when a deploy since its start handed it a fresh one (unused
            # while it runs: the one it started with was deleted).
            assert {"ca.pem", "token", "held.json"} <= {p.name for p in handoff.iterdir()} <= {
                "ca.pem", "token", "held.json", "refresh", "secret_id.wrapped"}
            assert (handoff.stat().st_uid, oct(handoff.stat().st_mode & 0o777)) == (10001, "0o700")
            assert oct((handoff / "token").stat().st_mode & 0o777) == "0o600"
            assert _in(container, _USERNAME).startswith(f"v-approle-{settings.app.db_app_role[:8]}")


def _lease_lines(status: str) -> dict[str, str]:
    """`make status`'s output → {the container line's name: the vault line under it}."""
    found, row = {}, None
    for line in status.splitlines():
        if line.startswith("    ") and not line.startswith("      "):
            row = line.split()[0]
        elif line.startswith("      vault: user ") and row:
            found[row] = line.strip()
    return found


def test_make_status_shows_each_api_and_worker_container_s_lease_with_a_future_expiry(settings):
    """`make status` reads each container's lease.json (the credential keeper's, nothing secret):
    the user it holds, the lease and token ends (in the future), no WARNING; never the password."""
    if settings.secrets.backend != "vault":
        pytest.skip("secrets.backend is not vault")
    status = run_shipyard("status", "--env", settings.name)
    assert status.returncode == 0, status.stdout + status.stderr
    leases = _lease_lines(status.stdout)
    for service in ("api", "worker"):
        running = _running(settings, service)
        assert running, f"no {service} container runs"
        for instance, container in running:
            assert instance in leases, f"no lease line under {instance}:\n{status.stdout}"
            line = leases[instance]
            held = json.loads(_in(container, "import json; d = json.load(open('/run/taskplatform-vault/postgres.json'));"
                                             " print(json.dumps({'u': d['username'], 'p': d['password']}))"))
            assert held["p"] not in status.stdout
            assert line.startswith(f"vault: user v-approle-{settings.app.db_app_role[:8]}"), line
            lease_left = int(line.split("lease ends in ")[1].split("s ")[0])
            token_left = int(line.split("token ends in ")[1].split("s ")[0])
            assert lease_left > 0 and token_left > 0, line
    assert "WARNING vault" not in status.stdout, status.stdout


def test_a_worker_killed_comes_back_by_itself_with_what_its_directory_holds(settings):
    """The engine restarts a crashed container (SIGKILL of its process), no deploy in between:
    it logs in with the wrapped secret-id a deploy handed it meanwhile, if one waits there; killed
    again, with none left, it resumes the token it kept. A new PostgreSQL user each time."""
    if settings.secrets.backend != "vault":
        pytest.skip("secrets.backend is not vault")
    instance, container = _running(settings, "worker")[0]
    handoff = Path(settings.deploy_root) / f".{settings.name}.handoff" / "vault" / instance

    def inspect(field: str):
        return json.loads(subprocess.run(["docker", "inspect", "-f", f"{{{{json .{field}}}}}", container],
                                         capture_output=True, text=True, check=True).stdout)

    def kill_and_wait() -> str:
        restarts, before = inspect("RestartCount"), _in(container, _USERNAME)
        since = inspect("State")["StartedAt"]
        subprocess.run(["kill", "-9", str(inspect("State")["Pid"])], check=True)
        deadline = time.monotonic() + 90
        while not (inspect("RestartCount") > restarts and inspect("State").get("Health", {}).get("Status") == "healthy"):
            assert time.monotonic() < deadline, f"{instance} not healthy again within 90 s: {inspect('State')}"
            time.sleep(0.5)
        assert _in(container, _USERNAME) not in (before, "")
        return subprocess.run(["docker", "logs", "--since", since, container], capture_output=True, text=True).stdout

    if (handoff / "secret_id.wrapped").exists():
        logs = kill_and_wait()
        assert "logged in to Vault" in logs and "resumed the token" not in logs, logs[-2000:]
        assert not (handoff / "secret_id.wrapped").exists()  # used, deleted
    logs = kill_and_wait()
    assert "resumed the token kept by an earlier start" in logs, logs[-2000:]
    # `make verify` counts any restart as a loop: the worker is recreated (a new container, which
    # resumes the same kept token) so that the environment verifies as before.
    from shipyard import commands

    project_dir = commands.project_dir(settings.deploy_root, settings.name)
    subprocess.run(commands.compose(project_dir, settings.compose_project, "up", "-d", "--wait", "--force-recreate",
                                    "--no-deps", instance), check=True, capture_output=True)


def test_a_restarted_server_is_sealed_the_platform_serves_on_and_the_next_deploy_unseals_it(settings):
    """Vault sealed under task traffic: the API and workers keep serving on what they hold (no
    request fails, every task runs), say in `make status` that they cannot reach it, and are back
    to no warning once `make up` has unsealed it."""
    client = api_client(settings, "vault-sealed")
    container = container_of(settings, "vault-1")
    with Traffic(client) as traffic:
        subprocess.run(["docker", "restart", container], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while "sealed (unseal progress" not in (status := run_shipyard("vault-status", "--env", settings.name)).stdout:
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.5)
        assert status.returncode == 1
        # Each keeper's next call to Vault fails on the sealed server: counted and shown, nothing
        # else changes. Its next call is asked for, as a deploy asks after new copies (the
        # renewals are due only half a lease later).
        for _, running in _running(settings, "api") + _running(settings, "worker"):
            subprocess.run(["docker", "exec", running, "touch", vault.REFRESH_FILE], check=True, capture_output=True)
        deadline = time.monotonic() + 60
        while (shown := run_shipyard("status", "--env", settings.name).stdout).count("WARNING vault") < 2:
            assert time.monotonic() < deadline, shown
            time.sleep(1)
        assert "SEALED (unseal progress 0/3; the next `make up` unseals it)" in shown, shown
        up = run_shipyard("up", "--env", settings.name)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    counts = wait_all_processed(client, traffic.accepted)
    assert counts["accepted"] > 0 and counts["processed"] == counts["accepted"], counts
    assert traffic.refused == 0, f"{traffic.refused} requests failed while Vault was sealed"
    assert "shipyard: vault: unsealed vault-1" in up.stdout
    assert "vault: nothing to change" in up.stdout
    assert run_shipyard("vault-status", "--env", settings.name).returncode == 0
    deadline = time.monotonic() + 60
    while "WARNING vault" in (shown := run_shipyard("status", "--env", settings.name).stdout):
        assert time.monotonic() < deadline, shown  # each keeper's next call goes through
        time.sleep(1)
    assert "unsealed, leader" in shown


def test_rotating_the_servers_tls_serves_a_new_certificate_from_the_same_ca_and_ends_unsealed(settings, ca_file):
    address = setup.server_addresses(settings)[0][1].removeprefix("https://")
    host, port = address.rsplit(":", 1)

    def served() -> str:
        return ssl.get_server_certificate((host, int(port)))

    before = served()
    rotated = run_shipyard("secrets-rotate", "--env", settings.name, "--name", "vault_tls")
    assert rotated.returncode == 0, rotated.stdout[-3000:] + rotated.stderr[-3000:]
    assert "shipyard: vault: unsealed vault-1" in rotated.stdout  # recreated with it, unsealed by the same deploy
    after = served()
    assert after != before
    context = ssl.create_default_context(cafile=ca_file)  # the held CA, unchanged, verifies the new one
    with context.wrap_socket(socket.create_connection((host, int(port)), timeout=5),
                             server_hostname="localhost") as tls:
        assert tls.getpeercert()
    assert run_shipyard("vault-status", "--env", settings.name).returncode == 0
