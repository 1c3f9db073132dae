"""Redis with Sentinel: every Sentinel agrees on the master and sees its peers, the master has
its replicas connected, and every Redis node (and PostgreSQL replica) refuses anonymous clients."""

import pytest

from shipyard.components.redis import SENTINEL_CONF
from shipyard.components.redis.instances import node_names as redis_nodes, sentinel_names as redis_sentinels


def _exec(target, service: str, *argv: str) -> str:
    _, out, err = target.exec(service, list(argv))
    return out + err


@pytest.fixture(scope="module")
def sentinels(target):
    if not target.runs("redis"):
        pytest.skip("no Redis on this host")
    names = redis_sentinels(target.settings)
    if not names:
        pytest.skip("redis.sentinels is 0")
    return names


def test_all_sentinels_agree_on_the_master_and_see_their_peers(target, sentinels):
    master = target.settings.redis.master_name
    answers = {_exec(target, s, "sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "get-master-addr-by-name", master).split()[0]
               for s in sentinels}
    assert len(answers) == 1, f"Sentinels disagree on the master: {answers}"
    for s in sentinels:
        peers = _exec(target, s, "sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "sentinels", master).splitlines()
        assert peers.count("name") == len(sentinels) - 1, f"{s} sees {peers.count('name')} peers"


def test_the_master_has_all_replicas_connected(target, sentinels):
    master = target.settings.redis.master_name
    replicas = _exec(target, sentinels[0], "sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "replicas", master).splitlines()
    flags = [replicas[i + 1] for i, line in enumerate(replicas) if line == "flags"]
    assert len(flags) == target.settings.redis.replicas
    assert all(f == "slave" for f in flags), flags  # not s_down / disconnected


def test_every_node_refuses_anonymous_clients(target):
    if not target.runs("redis"):
        pytest.skip("no Redis on this host")
    for node in redis_nodes(target.settings):
        assert "NOAUTH" in _exec(target, node, "redis-cli", "-p", "6379", "ping"), node
    # The Sentinels too: an anonymous client could otherwise SENTINEL MONITOR a rogue master and
    # collect the password the app sends it.
    for sentinel in redis_sentinels(target.settings):
        assert "NOAUTH" in _exec(target, sentinel, "redis-cli", "-p", "26379", "sentinel", "masters"), sentinel
