"""`make vault-init` (shipyard/components/vault/setup.py) against a real OpenBao server on the
port the settings publish, with a throw-away secret store: the CA made once and kept, the server
initialised with its unseal keys and root token age-encrypted at once, bootstrapped and given
each service's secrets; run again, nothing changes; the server restarted (sealed), the next run
unseals it from the store."""

from __future__ import annotations

import json

import pytest

from shipyard import secretstore
from shipyard.components import component_named
from shipyard.components.vault import setup
from shipyard.errors import SecretsError
from shipyard.inventory import load_environment
from tests.vault.conftest import REPO, VARIABLES, start_bao, write_tls


@pytest.fixture(scope="module")
def store(workdir):
    repo = workdir / "checkout"
    environ = {secretstore.IDENTITY_DIR_VAR: str(workdir / "identities")}
    values = secretstore.load_or_create(repo, "ci", environ)
    return repo, environ, {name: secret.value for name, secret in values.items()}


def test_the_component_declares_what_setup_holds():
    assert sorted(component_named("vault").held_secrets) == sorted(setup.HELD)
    assert not set(setup.HELD) & set(secretstore.SECRET_NAMES)  # never delivered to a host


def test_vault_init_twice_then_after_a_restart(workdir, store, postgres):
    from taskplatform_testing.servers import free_port

    repo, environ, values = store
    values = {**values, "postgres_password": postgres.password}  # the test server's superuser
    port = free_port()
    settings = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port)})
    ca = setup.ensure_ca(repo, settings, environ)
    assert setup.ensure_ca(repo, settings, environ) == ca  # made once
    tls_dir = write_tls(workdir / "setup-tls", ca)
    ports = (port, free_port())
    server = start_bao(workdir / "setup-bao", settings, tls_dir, node_id="vault-1", ports=ports)
    database = (f"127.0.0.1:{postgres.port}",)
    try:
        first = setup.run(settings, repo, values, environ, database)
        assert first[0].startswith("initialised https://127.0.0.1:") and first[1] == "unsealed vault-1"
        assert first[2].startswith("vault: changed ")
        assert first[3].startswith("service secrets: ") and not first[3].startswith("service secrets: 0 written")
        held = {name: (repo / "secrets" / "ci" / f"{name}.age").read_bytes() for name in setup.HELD}
        token = secretstore.read_held(repo, "ci", setup.ROOT_TOKEN, environ).value
        keys = json.loads(secretstore.read_held(repo, "ci", setup.UNSEAL_KEYS, environ).value)
        assert len(keys) == settings.vault.unseal_key_shares
        assert not any(token.encode() in data or keys[0].encode() in data for data in held.values())
        assert not any(token in line for line in first)

        lines, healthy = setup.status(settings, repo, environ)
        assert healthy and lines == [f"vault-1  https://127.0.0.1:{port}  unsealed, leader, OpenBao 2.7.2"], lines

        second = setup.run(settings, repo, values, environ, database)
        assert second[0].startswith("vault: nothing to change"), second
        assert second[1].startswith("service secrets: 0 written")

        server.stop()
        server = start_bao(workdir / "setup-bao", settings, tls_dir, node_id="vault-1", ports=ports)
        assert server.client().sys.read_seal_status()["sealed"]
        lines, healthy = setup.status(settings, repo, environ)
        assert not healthy and lines == [f"vault-1  https://127.0.0.1:{port}  sealed (unseal progress 0/3)"], lines
        third = setup.run(settings, repo, values, environ, database)
        assert third[0] == "unsealed vault-1" and third[1].startswith("vault: nothing to change"), third
    finally:
        server.stop()
    with pytest.raises(SecretsError, match="never overwritten"):
        secretstore.write_held(repo, "ci", setup.ROOT_TOKEN, "x", environ)


def test_an_unreachable_server_is_named(store):
    from taskplatform_testing.servers import free_port

    repo, environ, values = store
    port = free_port()
    settings = load_environment(REPO, "ci", {**VARIABLES, "SHIPYARD_PORTS__VAULT_HTTPS": str(port)})
    with pytest.raises(setup.VaultError, match=rf"https://127.0.0.1:{port}: unreachable"):
        setup.run(settings, repo, values, environ, ("127.0.0.1:1",))
    lines, healthy = setup.status(settings, repo, environ)
    assert not healthy and lines == [f"vault-1  https://127.0.0.1:{port}  unreachable (ConnectionError)"]
