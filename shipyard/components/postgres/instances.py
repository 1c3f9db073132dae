"""The PostgreSQL nodes of an environment, by name, for the drills, checks and status (which
node is the primary now is not a setting: `make pg-promote` changes it at run time)."""

from __future__ import annotations

from shipyard import topology


def node_names(settings) -> tuple[str, ...]:
    """``postgres`` (the first primary) and its replicas."""
    return topology.build(settings).instance_names("postgres", "postgres") + replica_names(settings)


def replica_names(settings) -> tuple[str, ...]:
    return topology.build(settings).instance_names("postgres", "postgres-replica")
