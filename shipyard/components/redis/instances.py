"""The Redis nodes and Sentinels of an environment, by name, for the drills, checks and status
(which node is the master now is the Sentinels' business, not a setting)."""

from __future__ import annotations

from shipyard import topology


def node_names(settings) -> tuple[str, ...]:
    """``redis`` (the first master) and its replicas."""
    return topology.build(settings).instance_names("redis", "redis") + topology.build(settings).instance_names("redis", "redis-replica")


def sentinel_names(settings) -> tuple[str, ...]:
    return topology.build(settings).instance_names("redis", "redis-sentinel")
