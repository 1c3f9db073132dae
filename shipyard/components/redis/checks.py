"""Redis with Sentinel: every Sentinel agrees on the master and sees its peers, the master has
its replicas connected, and every Redis node (and PostgreSQL replica) refuses anonymous clients.
Each host checks its own nodes and Sentinels; the host of the first Sentinel also asks every
other host's (over SSH, as `make redis-failover` does) whether they agree."""

import pytest

from shipyard import topology
from shipyard.components.redis import SENTINEL_CONF
from shipyard.components.redis.failover import sentinel_masters
from shipyard.components.redis.instances import node_names as redis_nodes, sentinel_names as redis_sentinels


def _exec(target, service: str, *argv: str) -> str:
    _, out, err = target.exec(service, list(argv))
    return out + err


def _here(target, names) -> list[str]:
    """Those of ``names`` that run on the target's host."""
    on_host = {i.name for i in topology.build(target.settings).instances_on(target.rendered.host)}
    return [n for n in names if n in on_host]


@pytest.fixture(scope="module")
def sentinels(target):
    names = _here(target, redis_sentinels(target.settings))
    if not names:
        pytest.skip("no Redis Sentinel on this host")
    return names


def test_all_sentinels_agree_on_the_master(target, sentinels):
    everywhere = redis_sentinels(target.settings)
    if everywhere[0] not in sentinels:
        pytest.skip(f"asked from the host of {everywhere[0]}")
    answers = dict(zip(everywhere, sentinel_masters(target.settings)))
    assert len(set(answers.values())) == 1, f"Sentinels disagree on the master: {answers}"


def test_every_sentinel_sees_its_peers(target, sentinels):
    master, count = target.settings.redis.master_name, len(redis_sentinels(target.settings))
    for s in sentinels:
        peers = _exec(target, s, "sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "sentinels", master).splitlines()
        assert peers.count("name") == count - 1, f"{s} sees {peers.count('name')} of its {count - 1} peers"


def test_the_master_has_all_replicas_connected(target, sentinels):
    master = target.settings.redis.master_name
    replicas = _exec(target, sentinels[0], "sh", f"{SENTINEL_CONF}/cli.sh", "sentinel", "replicas", master).splitlines()
    flags = [replicas[i + 1] for i, line in enumerate(replicas) if line == "flags"]
    assert len(flags) == target.settings.redis.replicas
    assert all(f == "slave" for f in flags), flags  # not s_down / disconnected


def test_every_node_refuses_anonymous_clients(target):
    if not target.runs("redis"):
        pytest.skip("no Redis on this host")
    for node in _here(target, redis_nodes(target.settings)):
        assert "NOAUTH" in _exec(target, node, "redis-cli", "-p", "6379", "ping"), node
    # The Sentinels too: an anonymous client could otherwise SENTINEL MONITOR a rogue master and
    # collect the password the app sends it.
    for sentinel in _here(target, redis_sentinels(target.settings)):
        assert "NOAUTH" in _exec(target, sentinel, "redis-cli", "-p", "26379", "sentinel", "masters"), sentinel
