"""`taskplatform queue-stats`: what waits, runs and died, per kind, as PostgreSQL has it now — for
`make status` (one JSON document; the operator asks, nothing polls it).

One query on the rows that are not finished well (queued, scheduled, running, dead): the finished
ones, the bulk of the table, are left out by the status filter.
"""

from __future__ import annotations

import psycopg

from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings

QUERY = (
    "SELECT kind, count(*) FILTER (WHERE status = 'queued') AS queued, "
    "  coalesce(extract(epoch FROM clock_timestamp() - min(queued_at) FILTER (WHERE status = 'queued')), 0) "
    "    AS oldest_queued_s, "
    "  count(*) FILTER (WHERE status = 'scheduled') AS scheduled, "
    "  count(*) FILTER (WHERE status = 'running') AS running, "
    "  count(*) FILTER (WHERE status = 'dead') AS dead "
    "FROM tasks WHERE status IN ('queued', 'scheduled', 'running', 'dead') GROUP BY kind ORDER BY kind")


def read(conn: psycopg.Connection) -> dict:
    """{"kinds": {kind: {queued, oldest_queued_s, scheduled, running, dead}}, "total": {...}}."""
    kinds = {}
    for kind, queued, oldest, scheduled, running, dead in conn.execute(QUERY).fetchall():
        kinds[kind] = {"queued": queued, "oldest_queued_s": round(float(oldest), 1), "scheduled": scheduled,
                       "running": running, "dead": dead}
    total = {key: sum(k[key] for k in kinds.values()) for key in ("queued", "scheduled", "running", "dead")}
    total["oldest_queued_s"] = max((k["oldest_queued_s"] for k in kinds.values()), default=0.0)
    return {"kinds": kinds, "total": total}


def connect(settings: ProcessSettings, secrets: SecretSource) -> psycopg.Connection:
    """As the app role (it reads rows), on any node: a replica's answer is a moment old, which
    a status line can afford."""
    return psycopg.connect(host=",".join(h for h, _ in settings.pg_nodes()),
                           port=",".join(str(p) for _, p in settings.pg_nodes()), dbname=settings.pg_database,
                           user=settings.pg_user, password=secrets.get("postgres_password"),
                           connect_timeout=int(settings.pg_connect_timeout_seconds) or 2)
