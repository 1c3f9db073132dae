"""`make vault-init` (shipyard/components/vault/setup.py) against a real OpenBao server on the
port the settings publish, with a throw-away secret store: the CA made once and kept, the server
initialised with its unseal keys and root token age-encrypted at once, the deployer's AppRole
made, bootstrapped and given each service's secrets, the root token revoked and deleted; run
again (as the deployer), nothing changes, and another root token left standing is revoked; the
server restarted (sealed), the next run unseals it from the store."""

from __future__ import annotations

import json
import shutil

import hvac.exceptions
import pytest

from shipyard import secretstore
from shipyard.components import component_named
from shipyard.components.vault import bootstrap, setup
from shipyard.errors import SecretsError
from shipyard.inventory import load_environment
from taskplatform_testing.bao_server import start_bao, write_tls
from tests.vault.conftest import ISSUER_PASSWORD, REPO, VARIABLES


@pytest.fixture(scope="module")
def store(workdir):
    repo = workdir / "checkout"
    repo.mkdir()
    # The store issues the servers' TLS bundle from the inventory's addresses: the real ones.
    (repo / "inventories").symlink_to(REPO / "inventories")
    environ = {secretstore.IDENTITY_DIR_VAR: str(workdir / "identities")}
    values = secretstore.load_or_create(repo, "ci", environ)
    return repo, environ, {name: secret.value for name, secret in values.items()}


def test_the_component_declares_what_setup_holds():
    assert sorted(component_named("vault").held_secrets) == sorted(setup.HELD)
    assert not set(setup.HELD) & set(secretstore.SECRET_NAMES)  # never delivered to a host


def test_vault_init_twice_then_after_a_restart(workdir, store, postgres):
    from taskplatform_testing.servers import free_port

    repo, environ, values = store
    values = {**values, "pg_issuer_password": ISSUER_PASSWORD}  # the test server's issuer role
    port = free_port()
    settings = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port)})
    ca = setup.ensure_ca(repo, settings, environ)
    assert setup.ensure_ca(repo, settings, environ) == ca  # made once
    # The servers' bundle as the store issued it (the secret vault_tls a deploy delivers).
    tls_dir = write_tls(workdir / "setup-tls", ca, values["vault_tls"])
    ports = (port, free_port())
    server = start_bao(workdir / "setup-bao", settings, tls_dir, node_id="vault-1", ports=ports)
    database = (f"127.0.0.1:{postgres.port}",)
    store_dir = repo / "secrets" / "ci"
    try:
        # Interrupted: PostgreSQL unreachable mid-bootstrap. The keys, the root token and the
        # deployer's credential are stored already, so the next run can finish.
        with pytest.raises(setup.VaultError):
            setup.run(settings, repo, values, environ, ("127.0.0.1:1",))
        assert all((store_dir / f"{name}.age").exists() for name in setup.HELD)
        root = server.client()
        root.token = secretstore.read_held(repo, "ci", setup.ROOT_TOKEN, environ).value
        extra_root = root.auth.token.create(policies=["root"])["auth"]["client_token"]  # an operator's, left standing

        first = setup.run(settings, repo, values, environ, database)
        assert first[0] == "unsealed vault-1" or first[0].startswith("vault: changed "), first
        assert first[-2:] == ["the initial root token revoked and deleted from secrets/ci/",
                              "1 other root token(s) revoked"], first
        assert any(line.startswith("service secrets: ") and not line.startswith("service secrets: 0 written")
                   for line in first), first
        for token in (root.token, extra_root):
            with pytest.raises(hvac.exceptions.Forbidden):
                server.client().lookup_token(token)
        held = {name: (store_dir / f"{name}.age").read_bytes() for name in setup.HELD if (store_dir / f"{name}.age").exists()}
        assert sorted(held) == sorted(set(setup.HELD) - {setup.ROOT_TOKEN})
        keys = json.loads(secretstore.read_held(repo, "ci", setup.UNSEAL_KEYS, environ).value)
        assert len(keys) == settings.vault.unseal_key_shares
        assert not any(keys[0].encode() in data for data in held.values())
        assert not any(keys[0] in line or root.token in line for line in first)

        # The deployer may bootstrap, and not more: not the seal, not a service's credentials,
        # not the root policy.
        deployer = server.client()
        bootstrap.login_deployer(deployer, secretstore.read_held(repo, "ci", setup.DEPLOYER, environ).value)
        for forbidden in (deployer.sys.seal, lambda: deployer.read("database/creds/tasks_app"),
                          lambda: deployer.sys.create_or_update_policy("service-api", 'path "*" {capabilities = ["sudo"]}')
                          and False, lambda: deployer.auth.token.create(policies=["root"])):
            with pytest.raises(hvac.exceptions.Forbidden):
                forbidden()

        lines, healthy = setup.status(settings, repo, environ)
        assert healthy and lines == [f"vault-1  https://127.0.0.1:{port}  unsealed, leader, OpenBao 2.7.2"], lines

        def deployer_client():
            client = server.client()
            bootstrap.login_deployer(client, secretstore.read_held(repo, "ci", setup.DEPLOYER, environ).value)
            return client

        # As the deployer, the next run puts back what drifted (a policy widened by hand)...
        deployer.sys.create_or_update_acl_policy("service-api", 'path "secret/*" { capabilities = ["read"] }')
        second = setup.run(settings, repo, values, environ, database)
        assert second[0].startswith("vault: changed policy service-api: updated"), second
        assert second[1].startswith("service secrets: 0 written") and len(second) == 2, second
        # ...and then has nothing to change.
        assert setup.run(settings, repo, values, environ, database)[0].startswith("vault: nothing to change")

        # `make secrets-migrate TO=vault` from the files backend: the copies the API and workers read
        # under Vault written (not the app role's password: their users are dynamic) and read back
        # by each service logged in as itself; nothing secret printed.
        on_age = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port),
                                               "SHIPYARD_SECRETS__BACKEND": "age"})
        setup.run(on_age, repo, values, environ, database)
        assert bootstrap.read_copy(deployer_client(), "services/api/postgres_password") == values["pg_app_password"]
        migrated = setup.migrate(on_age, repo, values, environ, database)
        assert "api: logged in as itself and read its 4 copies: all match secrets/ci/" in migrated, migrated
        assert "worker: logged in as itself and read its 3 copies: all match secrets/ci/" in migrated, migrated
        assert migrated[-1].startswith('next: set "backend": "vault" under "secrets" in inventories/ci.py'), migrated
        assert bootstrap.read_copy(deployer_client(), "services/api/postgres_password") is None  # deleted
        assert not any(value in line for line in migrated for value in values.values())

        server.stop()
        server = start_bao(workdir / "setup-bao", settings, tls_dir, node_id="vault-1", ports=ports)
        assert server.client().sys.read_seal_status()["sealed"]
        lines, healthy = setup.status(settings, repo, environ)
        assert not healthy and lines == [f"vault-1  https://127.0.0.1:{port}  sealed (unseal progress 0/3)"], lines
        # Before a deploy touches a host: sealed with the keys held goes on (the rollout unseals
        # it); without them, it stops there, naming the address and the seal status.
        assert setup.preflight(settings, repo, environ) == [
            f"vault-1 https://127.0.0.1:{port}: sealed (unseal progress 0/3); the rollout unseals it"]
        keys_file = store_dir / f"{setup.UNSEAL_KEYS}.age"
        keys_file.rename(keys_file.with_name("aside"))
        try:
            with pytest.raises(setup.VaultError, match=rf"https://127.0.0.1:{port}: vault-1 is sealed "
                                                       r"\(unseal progress 0/3\) and secrets/ci/ holds no"):
                setup.preflight(settings, repo, environ)
        finally:
            keys_file.with_name("aside").rename(keys_file)
        third = setup.run(settings, repo, values, environ, database)
        assert third[0] == "unsealed vault-1" and third[1].startswith("vault: nothing to change"), third

        # Its data deleted (as by `make down VOLUMES=1`): a real environment stops and deletes
        # nothing; a throw-away one (ci: secrets.generate_missing) forgets the old keys and starts afresh.
        server.stop()
        shutil.rmtree(workdir / "setup-bao" / "data")
        server = start_bao(workdir / "setup-bao", settings, tls_dir, node_id="vault-1", ports=ports)
        real = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port),
                                             "SHIPYARD_SECRETS__GENERATE_MISSING": "false"})
        with pytest.raises(setup.VaultError, match="holds vault_unseal_keys.age, vault_deployer.age of an earlier"):
            setup.run(real, repo, values, environ, database)
        assert (store_dir / "vault_unseal_keys.age").exists() and not server.client().sys.is_initialized()
        fourth = setup.run(settings, repo, values, environ, database)
        assert fourth[0].startswith("the servers' data was deleted: vault_unseal_keys.age, vault_deployer.age"), fourth
        assert fourth[1].startswith("initialised") and fourth[-1].startswith("the initial root token revoked"), fourth
    finally:
        server.stop()
    with pytest.raises(SecretsError, match="never overwritten"):
        secretstore.write_held(repo, "ci", setup.UNSEAL_KEYS, "x", environ)


def test_an_unreachable_server_is_named(store):
    from taskplatform_testing.servers import free_port

    repo, environ, values = store
    port = free_port()
    settings = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port)})
    with pytest.raises(setup.VaultError, match=rf"https://127.0.0.1:{port}: unreachable"):
        setup.run(settings, repo, values, environ, ("127.0.0.1:1",))
    lines, healthy = setup.status(settings, repo, environ)
    assert not healthy and lines == [f"vault-1  https://127.0.0.1:{port}  unreachable (ConnectionError)"]
    # Before a deploy touches a host: said, not a stop (a first deploy's server is not there yet).
    assert setup.preflight(settings, repo, environ) == [
        f"vault-1 https://127.0.0.1:{port}: unreachable (ConnectionError); the rollout starts it"]
