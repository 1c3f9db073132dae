"""Secrets that change under a running process (Vault's copies kept current by the credential
keeper, ``secrets.kept_dir``): the Redis password is read at each new connection, the Consul token
file is the kept copy when there is one. A real Redis whose password is rotated as a deploy does it
(the new one beside the old, then the old dropped)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis as redis_sync

from taskplatform import queue, secrets
from taskplatform.settings import ProcessSettings
from taskplatform_testing.servers import Redis


@pytest.fixture
def own_redis(tmp_path):
    server = Redis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_rotated_redis_password_reaches_new_connections_without_a_restart(own_redis, tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "redis_password").write_text(own_redis.password)
    settings = ProcessSettings(redis_host="127.0.0.1", redis_port=own_redis.port, secrets_dir=str(tmp_path / "none"))
    admin = redis_sync.Redis(port=own_redis.port, password=own_redis.password)

    async def scenario():
        client = queue.connect_for(settings, secrets.FileSecretSource(kept))
        assert await client.ping()
        # The rotation: the servers accept both, the keeper writes the new copy, the old goes.
        admin.execute_command("ACL", "SETUSER", "default", ">n3w-password-of-forty-three-characters-xxx")
        (kept / "redis_password").write_text("n3w-password-of-forty-three-characters-xxx")
        admin.execute_command("ACL", "SETUSER", "default", f"<{own_redis.password}")
        assert await client.ping()  # the connection it had stays logged in
        await client.connection_pool.disconnect()  # as after a failover: every connection is new
        assert await client.ping()  # logged in with the new password, read from the copy
        await client.aclose()

    asyncio.run(scenario())
    with pytest.raises(redis_sync.AuthenticationError):
        redis_sync.Redis(port=own_redis.port, password=own_redis.password).ping()


def test_the_consul_token_file_is_the_kept_copy_when_vault_serves_it(tmp_path):
    files = tmp_path / "run-secrets"
    files.mkdir()
    (files / "consul_token").write_text("from-the-deploy")
    on_files = ProcessSettings(secrets_dir=str(files))
    assert secrets.file_of(on_files, "consul_token") == files / "consul_token"
    on_vault = ProcessSettings(secrets_dir=str(files), vault_addr="https://vault:8200", vault_kv_path="services/api",
                               vault_state_dir=str(tmp_path / "state"))
    assert secrets.file_of(on_vault, "consul_token") == files / "consul_token"  # no copy kept (yet)
    Path(tmp_path / "state" / "secrets").mkdir(parents=True)
    (tmp_path / "state" / "secrets" / "consul_token").write_text("from-vault")
    assert secrets.file_of(on_vault, "consul_token") == tmp_path / "state" / "secrets" / "consul_token"
    assert secrets.for_process(on_vault).get("consul_token") == "from-vault"
