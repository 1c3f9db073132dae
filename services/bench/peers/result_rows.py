"""Outcomes of tasks whose results are rows in PostgreSQL (Shipyard's ``tasks``, Celery's
``celery_taskmeta``): what an adapter's ``count_done``, ``done_span`` and ``outcomes`` read, in
one query each, on one connection kept for the polls of a wait."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from peers.outcomes import with_pending


@dataclass
class ResultRows:
    """The columns are SQL of this module's callers, never input."""

    dsn: str
    table: str
    task_id: str  # the column as text
    ids_param: str  # how the list of ids is passed
    status: str
    done_at: str  # when the row reached its status
    checksum_succeeded: str  # the condition of a checksum task that succeeded
    states: dict[str, str]  # status -> "succeeded" | "failed"; any other: pending
    runs: str = "NULL"  # how often the task was started, where the system counts it
    _conn: psycopg.Connection | None = field(default=None, init=False, repr=False)

    def _query(self, sql: str, params=()) -> list[tuple]:
        if self._conn is None:
            self._conn = psycopg.connect(self.dsn, autocommit=True)
        return self._conn.execute(sql, params).fetchall()

    def count_done(self) -> int:
        return self._query(f"SELECT count(*) FROM {self.table} WHERE {self.checksum_succeeded}")[0][0]

    def done_span(self) -> tuple[float | None, float | None]:
        first, last = self._query(f"SELECT extract(epoch FROM min({self.done_at})), extract(epoch FROM "
                                  f"max({self.done_at})) FROM {self.table} WHERE {self.checksum_succeeded}")[0]
        return (float(first), float(last)) if first is not None else (None, None)

    def outcomes(self, ids: list[str]) -> dict[str, dict]:
        rows = self._query(f"SELECT {self.task_id}, {self.status}, extract(epoch FROM {self.done_at}), {self.runs} "
                           f"FROM {self.table} WHERE {self.task_id.split('::')[0]} = ANY({self.ids_param})", (ids,))
        return with_pending(ids, {task_id: {"state": self.states.get(status, "pending"), "done_at": float(at),
                                            "runs": runs} for task_id, status, at, runs in rows})


class ReadsResultRows:
    """An adapter's reads when its results are rows in PostgreSQL (its ``rows``)."""

    rows: ResultRows

    def count_done(self, expected: int) -> int:
        return self.rows.count_done()

    def done_span(self) -> tuple[float | None, float | None]:
        return self.rows.done_span()

    def outcomes(self, ids: list[str]) -> dict[str, dict]:
        return self.rows.outcomes(ids)
