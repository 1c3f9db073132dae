"""Each PostgreSQL node's role as the node itself reports it (``pg_is_in_recovery()``, asked
inside its container as the replication role): which node leads changes at run time (a Patroni
failover or switchover), so the commands, drills and tests ask rather than assume."""

from __future__ import annotations

import docker.errors

from shipyard.components.postgres.instances import node_names
from shipyard.controller.drills import require_local, run_in
from shipyard.errors import ShipyardError
from shipyard.settings import EnvironmentSettings

# As the replication role, through the node's own passfile (the secret replication_pgpass).
_CONNINFO = ("host=127.0.0.1 port=5432 user=replicator dbname=postgres connect_timeout=2 "
             "passfile=/run/secrets/replication_pgpass")


def check_node(settings: EnvironmentSettings, node: str) -> None:
    """Raises unless ``node`` is a PostgreSQL node of the environment (checked before any lock)."""
    require_local(settings)
    if node not in node_names(settings):
        raise ShipyardError(f"environment {settings.name}", f"has no PostgreSQL node {node!r}",
                            f"name one of: {', '.join(node_names(settings))}")


def ask(settings: EnvironmentSettings, node: str, sql: str) -> str | None:
    """``sql`` on ``node`` as the replication role (the node's own passfile); None when it does
    not answer or the statement fails."""
    try:
        code, out, _ = run_in(settings, node, ["psql", _CONNINFO, "-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
    except (ShipyardError, docker.errors.DockerException):
        return None  # no running container, or it went away meanwhile
    return out.strip() if code == 0 else None


def roles(settings: EnvironmentSettings) -> dict[str, str]:
    """node → "primary", "replica" or "down", from each node's pg_is_in_recovery()."""
    answers = {node: ask(settings, node, "SELECT pg_is_in_recovery()") for node in node_names(settings)}
    return {node: {"f": "primary", "t": "replica"}.get(answer or "", "down") for node, answer in answers.items()}


def primary_of(settings: EnvironmentSettings) -> str:
    primaries = [node for node, role in roles(settings).items() if role == "primary"]
    if len(primaries) != 1:
        raise ShipyardError(f"environment {settings.name}", f"expected one PostgreSQL primary, found {primaries or 'none'}",
                            f"bring the data tier back first: make up ENV={settings.name}")
    return primaries[0]
