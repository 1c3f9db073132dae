"""`taskplatform queue-stats`: what waits, runs and died, per queue and per kind, as PostgreSQL
has it now — for `make status` (one JSON document; the operator asks, nothing polls it).

One query on the rows that are not finished well (queued, scheduled, running, dead): the finished
ones, the bulk of the table, are left out by the status filter. A row of a release before queues
names no queue: it is counted in its kind's (the kinds this image declares; ``default`` for a
kind it does not know).
"""

from __future__ import annotations

import psycopg

from taskplatform import kinds

from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings

QUERY = (
    "SELECT kind, queue, count(*) FILTER (WHERE status = 'queued') AS queued, "
    "  coalesce(extract(epoch FROM clock_timestamp() - min(queued_at) FILTER (WHERE status = 'queued')), 0) "
    "    AS oldest_queued_s, "
    "  count(*) FILTER (WHERE status = 'scheduled') AS scheduled, "
    "  count(*) FILTER (WHERE status = 'running') AS running, "
    "  count(*) FILTER (WHERE status = 'dead') AS dead "
    "FROM tasks WHERE status IN ('queued', 'scheduled', 'running', 'dead') GROUP BY kind, queue ORDER BY kind")

COUNTS = ("queued", "scheduled", "running", "dead")


def _add(into: dict, counts: dict) -> None:
    for key in COUNTS:
        into[key] = into.get(key, 0) + counts[key]
    into["oldest_queued_s"] = max(into.get("oldest_queued_s", 0.0), counts["oldest_queued_s"])


def _empty() -> dict:
    return {**{key: 0 for key in COUNTS}, "oldest_queued_s": 0.0}


def read(conn: psycopg.Connection, kinds_packages: str | None = None) -> dict:
    """{"queues": {queue: {...}}, "kinds": {kind: {...}}, "total": {...}}, each {queued,
    oldest_queued_s, scheduled, running, dead}; every queue the kinds declare is listed, at 0
    when empty."""
    declared, queue_of = _declared_queues(kinds_packages)
    queues = {name: _empty() for name in declared}
    by_kind, total = {}, _empty()
    for kind, queue, queued, oldest, scheduled, running, dead in conn.execute(QUERY).fetchall():
        counts = {"queued": queued, "oldest_queued_s": round(float(oldest), 1), "scheduled": scheduled,
                  "running": running, "dead": dead}
        _add(by_kind.setdefault(kind, {}), counts)
        _add(queues.setdefault(queue or queue_of(kind), _empty()), counts)
        _add(total, counts)
    return {"queues": dict(sorted(queues.items())), "kinds": by_kind, "total": total}


def _declared_queues(kinds_packages: str | None):
    """(the queues the image's kinds declare, kind → queue). Kinds that cannot be loaded (a
    broken package) must not cost the status line: every row then counts in its own queue, or
    ``default``."""
    try:
        kinds.registry(kinds_packages)
        return kinds.queues(), kinds.queue_of
    except kinds.KindError:
        return [kinds.DEFAULT_QUEUE], lambda kind: kinds.DEFAULT_QUEUE


def connect(settings: ProcessSettings, secrets: SecretSource) -> psycopg.Connection:
    """As the app role (it reads rows), on any node: a replica's answer is a moment old, which
    a status line can afford. With Vault: as the container's current dynamic user (the keeper's)."""
    if settings.vault_enabled():
        from taskplatform.db_credentials import read_credentials

        held = read_credentials(settings.vault_state_dir)
        user, password = held.username, held.password
    else:
        user, password = settings.pg_user, secrets.get("postgres_password")
    return psycopg.connect(host=",".join(h for h, _ in settings.pg_nodes()),
                           port=",".join(str(p) for _, p in settings.pg_nodes()), dbname=settings.pg_database,
                           user=user, password=password, connect_timeout=int(settings.pg_connect_timeout_seconds) or 2)
