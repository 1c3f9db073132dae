"""Three real OpenBao servers from the component's template, joined by its raft ``retry_join``
(the production shape, here on loopback ports): initialised and unsealed through the first, the
others join by themselves and are unsealed with the same keys; every server is a raft voter; the
leader killed (SIGKILL), the other two elect a new one and keep serving reads and writes."""

from __future__ import annotations

import time

import hvac.exceptions
import pytest
import requests

from shipyard.components.vault import bootstrap
from taskplatform_testing.bao_server import start_bao, write_tls

SERVERS = 3


def _free_ports(count: int) -> list[tuple[int, int]]:
    from taskplatform_testing.servers import free_port

    ports: set[int] = set()
    while len(ports) < 2 * count:
        ports.add(free_port())
    ordered = sorted(ports)
    return [(ordered[2 * i], ordered[2 * i + 1]) for i in range(count)]


@pytest.fixture(scope="module")
def cluster(workdir, settings):
    tls_dir = write_tls(workdir / "raft-tls")
    ports = _free_ports(SERVERS)
    join = [f"127.0.0.1:{api}" for api, _ in ports]
    servers = [start_bao(workdir / f"raft-{n}", settings, tls_dir, node_id=f"vault-{n}", join=join, ports=ports[n - 1])
               for n in range(1, SERVERS + 1)]
    yield servers
    for server in servers:
        server.stop()


def _unseal_when_joined(server, keys, timeout_s: float = 60) -> None:
    """A joining server is uninitialised until raft's retry_join reaches the leader."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            bootstrap.unseal(server.client(), keys)
            return
        except (hvac.exceptions.VaultError, requests.RequestException, bootstrap.VaultError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _voters(client) -> list[str]:
    servers = client.read("sys/storage/raft/configuration")["data"]["config"]["servers"]
    return sorted(s["node_id"] for s in servers if s["voter"])


def _leader(servers, token: str, not_this=None, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for server in servers:
            if server is not_this:
                continue
            try:
                if server.client(token).sys.read_leader_status()["is_self"]:
                    return server
            except (hvac.exceptions.VaultError, requests.RequestException):
                pass
        time.sleep(0.5)
    raise AssertionError("no leader elected")


def test_three_servers_join_by_retry_join_and_survive_the_loss_of_their_leader(cluster):
    first = cluster[0]
    init = bootstrap.initialize(first.client(), shares=3, threshold=2)
    bootstrap.unseal(first.client(), init.unseal_keys)
    bootstrap.wait_active(first.client())
    for server in cluster[1:]:
        _unseal_when_joined(server, init.unseal_keys)
    root = first.client(init.root_token)
    deadline = time.monotonic() + 60
    while _voters(root) != ["vault-1", "vault-2", "vault-3"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _voters(root) == ["vault-1", "vault-2", "vault-3"]
    root.sys.enable_secrets_engine(backend_type="kv", path="secret", options={"version": "2"})
    # A new KV v2 mount is unavailable for a moment while it upgrades ("Upgrading from
    # non-versioned to versioned data"); bootstrap.py waits for it the same way.
    _eventually(lambda: root.secrets.kv.v2.create_or_update_secret(path="before", secret={"value": "1"},
                                                                   mount_point="secret"))

    leader = _leader(cluster, init.root_token)
    leader.process.kill()
    leader.process.wait()
    killed = time.monotonic()
    survivor = _leader(cluster, init.root_token, not_this=leader)
    assert survivor is not leader
    for server in cluster:
        if server is leader:
            continue
        vault = server.client(init.root_token)  # a standby forwards to the new leader
        read = _eventually(lambda: vault.secrets.kv.v2.read_secret_version(
            path="before", mount_point="secret", raise_on_deleted_version=True)["data"]["data"])
        assert read == {"value": "1"}
        _eventually(lambda: vault.secrets.kv.v2.create_or_update_secret(
            path=f"after-{server.process.pid}", secret={"value": "2"}, mount_point="secret"))
    # What the loss cost: seconds from the kill until both survivors served a read and a write.
    print(f"raft: leader killed, reads and writes served again after {time.monotonic() - killed:.1f} s")


def _eventually(call, timeout_s: float = 30):
    """``call()`` once the new leader has taken over: a standby that still knows the old leader
    answers with an error for a moment (500 "active node not found" or a refused forward)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except (hvac.exceptions.VaultError, requests.RequestException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
