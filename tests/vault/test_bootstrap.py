"""The Vault bootstrap against a real OpenBao server (tests/vault/conftest.py): initialised and
unsealed once, bootstrapped twice (the second run changes nothing and says so), each service's
AppRole token refused on another service's path, and dynamic PostgreSQL credentials that work
with the privileges db-setup gives the role and are gone once their lease is revoked or expires.

The tests run in order on one server (the later ones use what the first made)."""

from __future__ import annotations

import json
import time

import hvac
import hvac.exceptions
import psycopg
import pytest

from shipyard.components.vault import bootstrap
from tests.vault.conftest import ISSUER_PASSWORD

STATE: dict = {}
SECRET_VALUES = {"jwt_signing_key": "jwt-test-value", "redis_password": "redis-test-value",
                 "consul_token_api": "consul-api-test-value", "consul_token_worker": "consul-worker-test-value",
                 "pg_migrator_password": "m" * 32}


def _root(bao):
    return bao.client(STATE["init"].root_token)


def test_init_and_unseal_once(bao):
    vault = bao.client()
    result = bootstrap.initialize(vault, shares=3, threshold=2)
    assert result is not None and len(result.unseal_keys) == 3
    assert "***" in repr(result) and result.root_token not in repr(result)
    STATE["init"] = result
    assert bootstrap.unseal(vault, result.unseal_keys) is True
    bootstrap.wait_active(vault)
    # Again: already initialised and unsealed, nothing happens.
    assert bootstrap.initialize(vault) is None
    assert bootstrap.unseal(vault, result.unseal_keys) is False


def test_bootstrap_twice_the_second_changes_nothing(bao, wanted, postgres):
    first = bootstrap.bootstrap(_root(bao), wanted, ISSUER_PASSWORD)
    assert first.changed, str(first)
    assert any(line.startswith("secrets engine kv at secret/") for line in first.changed)
    assert any(line.startswith("approle api") for line in first.changed)
    assert any(line.startswith("database role tasks_app") for line in first.changed)
    second = bootstrap.bootstrap(_root(bao), wanted, ISSUER_PASSWORD)
    assert second.changed == [], str(second)
    assert str(second).startswith("vault: nothing to change")
    assert len(second.unchanged) == len(first.changed) + len(first.unchanged)


def test_bootstrap_puts_back_what_was_changed_by_hand(bao, wanted, postgres):
    vault = _root(bao)
    vault.sys.create_or_update_policy(name="service-api", policy='path "secret/*" { capabilities = ["read"] }')
    vault.write_data("auth/approle/role/worker", data={"token_ttl": 99999, "token_max_ttl": 99999})
    report = bootstrap.bootstrap(vault, wanted, ISSUER_PASSWORD)
    assert report.changed == ["policy service-api: updated", "approle worker: updated (token_max_ttl, token_ttl)"]
    assert bootstrap.bootstrap(vault, wanted, ISSUER_PASSWORD).changed == []


def test_a_rotated_issuer_password_is_written_to_the_connection_and_used(bao, wanted, postgres):
    """The server never reads a password back: the bootstrap notices a new one by its fingerprint,
    and the connection works with it (a dynamic user made after the change)."""
    vault = _root(bao)
    bootstrap.bootstrap(vault, wanted, ISSUER_PASSWORD)
    rotated = "j" * 32
    with _connect(postgres, postgres.user, postgres.password) as admin:
        admin.execute(f"ALTER ROLE {wanted.database_admin} PASSWORD '{rotated}'")
    try:
        report = bootstrap.bootstrap(vault, wanted, rotated)
        assert report.changed == ["database connection postgres: updated (password)"], str(report)
        creds = vault.read("database/creds/tasks_app")
        with _connect(postgres, creds["data"]["username"], creds["data"]["password"]) as conn:
            assert conn.execute("SELECT session_user").fetchone()[0] == creds["data"]["username"]
        assert bootstrap.bootstrap(vault, wanted, rotated).changed == []
    finally:
        with _connect(postgres, postgres.user, postgres.password) as admin:
            admin.execute(f"ALTER ROLE {wanted.database_admin} PASSWORD '{ISSUER_PASSWORD}'")
        bootstrap.bootstrap(vault, wanted, ISSUER_PASSWORD)


def test_the_audit_device_is_on_and_hashes_values(bao, wanted):
    vault = _root(bao)
    assert vault.sys.list_enabled_audit_devices()["data"]["file/"]["type"] == "file"
    first = bootstrap.sync_secrets(vault, wanted, SECRET_VALUES)
    assert first.changed and bootstrap.sync_secrets(vault, wanted, SECRET_VALUES).changed == []
    log = bao.audit_log.read_text()
    assert log and all(json.loads(line) for line in log.splitlines())
    for value in SECRET_VALUES.values():
        assert value not in log
    assert STATE["init"].root_token not in log


def _login(bao, service: str):
    role_id, wrapped = bootstrap.issue_secret_id(_root(bao), service)
    assert role_id == f"service-{service}"  # config the compose file carries, set by the bootstrap
    # What a service does with the wrapped secret-id it is handed: unwrap it with itself as the token.
    secret_id = bao.client(wrapped).sys.unwrap()["data"]["secret_id"]
    with pytest.raises(hvac.exceptions.VaultError):
        bao.client(wrapped).sys.unwrap()  # single use
    vault = bao.client()
    auth = vault.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
    assert auth["token_policies"] == ["default", f"service-{service}"]
    assert auth["lease_duration"] == 300 and auth["renewable"]  # vault.approle.token_ttl_s (conftest)
    # The services that log in at run time get periodic tokens (no max TTL to force a new login,
    # which their single-use secret-id could not make); the others' tokens are not.
    period = vault.auth.token.lookup_self()["data"].get("period") or 0
    assert period == (300 if service in ("api", "worker") else 0), (service, period)
    with pytest.raises(hvac.exceptions.VaultError):
        bao.client().auth.approle.login(role_id=role_id, secret_id=secret_id)  # secret_id_num_uses = 1
    return vault


def _read(vault, path: str) -> str:
    return vault.secrets.kv.v2.read_secret_version(path=path, mount_point="secret",
                                                   raise_on_deleted_version=True)["data"]["data"]["value"]


def test_each_service_reads_its_own_path_and_is_refused_anothers(bao, wanted):
    api = _login(bao, "api")
    assert _read(api, "services/api/jwt_signing_key") == SECRET_VALUES["jwt_signing_key"]
    for path in ("services/worker/consul_token", "services/migrate/postgres_password"):
        with pytest.raises(hvac.exceptions.Forbidden):
            _read(api, path)
    with pytest.raises(hvac.exceptions.Forbidden):
        api.secrets.database.generate_credentials(name="tasks_migrator")  # the migrator's role, not its own
    with pytest.raises(hvac.exceptions.Forbidden):
        api.secrets.kv.v2.create_or_update_secret(path="services/api/jwt_signing_key", secret={"value": "x"})
    with pytest.raises(hvac.exceptions.Forbidden):
        api.secrets.kv.v2.list_secrets(path="services", mount_point="secret")  # other services' names
    assert api.secrets.kv.v2.list_secrets(path="services/api", mount_point="secret")["data"]["keys"]
    worker = _login(bao, "worker")
    # Copies named as the service reads them (its file's name), and none of the app role's
    # password: its users come from the database engine.
    assert _read(worker, "services/worker/consul_token") == SECRET_VALUES["consul_token_worker"]
    assert "postgres_password" not in worker.secrets.kv.v2.list_secrets(path="services/worker", mount_point="secret")["data"]["keys"]
    with pytest.raises(hvac.exceptions.Forbidden):
        _read(worker, "services/api/consul_token")


def _connect(postgres, username: str, password: str):
    return psycopg.connect(host="127.0.0.1", port=postgres.port, dbname=postgres.database, user=username,
                           password=password, autocommit=True, connect_timeout=5)


def _role_exists(postgres, username: str) -> bool:
    with _connect(postgres, postgres.user, postgres.password) as admin:
        return admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone() is not None


def test_a_dynamic_credential_has_the_app_roles_privileges_and_is_gone_when_revoked(bao, postgres):
    api = _login(bao, "api")
    creds = api.secrets.database.generate_credentials(name="tasks_app")
    username, password = creds["data"]["username"], creds["data"]["password"]
    with _connect(postgres, username, password) as conn:
        conn.execute("SELECT count(*) FROM tasks")
        conn.execute("UPDATE tasks SET status = status WHERE false")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE not_allowed (i int)")
        assert conn.execute("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = session_user").fetchone() \
            == (False, False)
        _root(bao).sys.revoke_lease(lease_id=creds["lease_id"])
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # its session ended with its lease
    assert not _role_exists(postgres, username)
    with pytest.raises(psycopg.OperationalError):
        _connect(postgres, username, password)


def test_a_migrators_tables_belong_to_the_migrator_role_after_its_user_expires(bao, postgres, settings):
    migrate = _login(bao, "migrate")
    creds = migrate.secrets.database.generate_credentials(name="tasks_migrator")
    username, password = creds["data"]["username"], creds["data"]["password"]
    assert creds["lease_duration"] == settings.vault.database.credential_ttl_s
    with _connect(postgres, username, password) as conn:
        conn.execute("CREATE TABLE vault_made (i int)")
    deadline = time.monotonic() + settings.vault.database.credential_ttl_s + 20
    while _role_exists(postgres, username) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _role_exists(postgres, username), "the user outlived its lease"
    with _connect(postgres, postgres.user, postgres.password) as admin:
        owner = admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'vault_made'").fetchone()
    assert owner == ("tasks_migrator",)
    with _connect(postgres, "tasks_app", "a" * 32) as app:  # default privileges reach the app role
        app.execute("SELECT count(*) FROM vault_made")


def test_a_dynamic_credential_is_renewed_up_to_its_max_ttl_only(bao, settings):
    worker = _login(bao, "worker")
    creds = worker.secrets.database.generate_credentials(name="tasks_app")
    assert creds["lease_duration"] == settings.vault.database.credential_ttl_s and creds["renewable"]
    renewed = worker.sys.renew_lease(lease_id=creds["lease_id"], increment=3600)
    assert renewed["lease_duration"] <= settings.vault.database.credential_max_ttl_s
    _root(bao).sys.revoke_lease(lease_id=creds["lease_id"])
