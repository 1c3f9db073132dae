"""PostgreSQL: a tenant's schedules (create, read, list, pause, resume, delete) and the firing
pass the workers run (``ScheduleStore.fire_due``), which creates one task per occurrence
however many firers run at once or die mid-way (migration 0006 says how)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from taskplatform import kinds, recurrence

_COLUMNS = ("id, tenant, kind, payload, cron, timezone, interval_seconds, catchup, paused, next_run_at, "
            "last_fired_at, created_at, updated_at, priority")

# One statement per schedule and pass: the occurrences are recorded first, and a task is made
# only for those recorded now (an occurrence already there was fired before: no second task).
_FIRE = """
    WITH fired AS (
        INSERT INTO schedule_occurrences (schedule_id, occurrence_at, task_id)
        SELECT $1, at, gen_random_uuid() FROM unnest($2::timestamptz[]) AS o(at) ORDER BY at
        ON CONFLICT DO NOTHING RETURNING occurrence_at, task_id)
    INSERT INTO tasks (id, tenant, kind, payload, max_attempts, status, queued_at, queue, priority)
    SELECT task_id, $3, $4, $5, $6, 'queued', clock_timestamp(), $7, $8 FROM fired ORDER BY occurrence_at
    RETURNING id"""


def schedule_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    doc.pop("tenant", None)
    doc["id"] = str(doc["id"])
    for key in ("next_run_at", "last_fired_at", "created_at", "updated_at"):
        doc[key] = doc[key] and doc[key].isoformat()
    return doc


def recurrence_of(row: asyncpg.Record | dict) -> recurrence.Recurrence:
    if row["cron"] is not None:
        return recurrence.Cron(row["cron"], recurrence.parse_zone(row["timezone"]))
    return recurrence.Interval(row["interval_seconds"], row["created_at"])


class ScheduleLimitReached(Exception):
    """The tenant has ``limit`` schedules already (runtime config ``schedules_max_per_tenant``)."""

    def __init__(self, count: int, limit: int):
        super().__init__(f"{count} schedules, the most is {limit}")
        self.count, self.limit = count, limit


@dataclass(frozen=True)
class Firing:
    """What one firing pass did: the tasks it created (queued, to be enqueued) with their kinds,
    and the occurrences it skipped by the schedules' catch-up policies."""
    task_ids: list[uuid.UUID]
    kinds: list[str]
    skipped: dict[str, int]  # by catch-up policy
    unreadable: dict[uuid.UUID, str]  # schedules left as they are: why (a time zone this host lacks)


class ScheduleStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    # --- API side ---------------------------------------------------------------------------
    async def create(self, tenant: str, kind: str, payload: dict, cron: str | None, timezone: str | None,
                     interval_seconds: int | None, catchup: recurrence.Catchup, priority: int = 5,
                     max_per_tenant: int | None = None) -> dict:
        """A new schedule whose first occurrence is the first after now (PostgreSQL's clock); an
        interval counts from now. With ``max_per_tenant``: ``ScheduleLimitReached`` when the
        tenant has that many already. The count and the insert are one transaction under a lock
        of the tenant's (a transaction-scoped advisory lock on its name): two creates of one
        tenant at once take turns, so however many race, the tenant never ends above the limit;
        other tenants' creates do not wait."""
        async with self.pool.acquire() as conn, conn.transaction():
            if max_per_tenant is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('schedules:' || $1, 0))", tenant)
                count = await conn.fetchval("SELECT count(*) FROM schedules WHERE tenant = $1", tenant)
                if count >= max_per_tenant:
                    raise ScheduleLimitReached(count, max_per_tenant)
            now = await conn.fetchval("SELECT clock_timestamp()")
            row = {"cron": cron, "timezone": timezone, "interval_seconds": interval_seconds, "created_at": now}
            first = recurrence_of(row).first_after(now)
            created = await conn.fetchrow(
                f"INSERT INTO schedules (id, tenant, kind, payload, cron, timezone, interval_seconds, catchup, "
                f"  next_run_at, created_at, updated_at, priority) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) "
                f"RETURNING {_COLUMNS}", uuid.uuid4(), tenant, kind, payload, cron, timezone, interval_seconds,
                catchup, first, now, priority)
        return schedule_json(created)

    async def get(self, tenant: str, schedule_id: uuid.UUID) -> dict | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM schedules WHERE id = $1 AND tenant = $2",
                                       schedule_id, tenant)
        return schedule_json(row) if row else None

    async def list(self, tenant: str, limit: int, after: tuple[dt.datetime, uuid.UUID] | None) -> list[dict]:
        """Newest first, keyset pagination on (created_at, id), as the tasks' list."""
        if after is None:
            rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM schedules WHERE tenant = $1 "
                                         f"ORDER BY created_at DESC, id DESC LIMIT $2", tenant, limit)
        else:
            rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM schedules WHERE tenant = $1 "
                                         f"AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $2",
                                         tenant, limit, after[0], after[1])
        return [schedule_json(r) for r in rows]

    async def delete(self, tenant: str, schedule_id: uuid.UUID) -> bool:
        """Gone with its occurrences' records; the tasks it made stay. Waits for a firing pass
        that holds it (its row lock) to end."""
        status = await self.pool.execute("DELETE FROM schedules WHERE id = $1 AND tenant = $2", schedule_id, tenant)
        return status.endswith(" 1")

    async def set_paused(self, tenant: str, schedule_id: uuid.UUID, paused: bool) -> dict | None:
        """Paused: no occurrence fires. Resumed: the next occurrence is the first after now —
        those that fell while it was paused are not fired (pausing says so)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_COLUMNS}, clock_timestamp() AS now FROM schedules "
                                      f"WHERE id = $1 AND tenant = $2 FOR NO KEY UPDATE", schedule_id, tenant)
            if row is None:
                return None
            next_run_at = row["next_run_at"]
            if row["paused"] and not paused:
                next_run_at = recurrence_of(row).first_after(row["now"])
            updated = await conn.fetchrow(
                f"UPDATE schedules SET paused = $2, next_run_at = $3, updated_at = clock_timestamp() WHERE id = $1 "
                f"RETURNING {_COLUMNS}", schedule_id, paused, next_run_at)
        return schedule_json(updated)

    # --- worker side ------------------------------------------------------------------------
    async def fire_due(self, max_attempts: int, limit: int = 100) -> Firing:
        """One firing pass over at most ``limit`` due schedules, in one transaction: each row is
        held (``FOR NO KEY UPDATE SKIP LOCKED``: a firer running at the same time takes others,
        and deleting or pausing one waits), its occurrences since ``next_run_at`` are fired by
        its catch-up policy (``recurrence.due``) and ``next_run_at`` moves past now. Killed
        mid-way, the firer commits nothing, and the next pass fires the same occurrences."""
        task_ids, task_kinds, skipped, unreadable = [], [], {}, {}
        async with self.pool.acquire() as conn, conn.transaction():
            now = await conn.fetchval("SELECT clock_timestamp()")
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM schedules WHERE NOT paused AND next_run_at <= $1 "
                f"ORDER BY next_run_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED", now, limit)
            for row in rows:
                try:
                    due = recurrence.due(recurrence_of(row), row["next_run_at"], now, row["catchup"])
                except recurrence.RecurrenceError as exc:  # one schedule cannot stop the others
                    unreadable[row["id"]] = str(exc)
                    continue
                created = []
                if due.fire:
                    created = [r["id"] for r in await conn.fetch(_FIRE, row["id"], due.fire, row["tenant"],
                                                                 row["kind"], row["payload"], max_attempts,
                                                                 kinds.queue_of(row["kind"]), row["priority"])]
                await conn.execute(
                    "UPDATE schedules SET next_run_at = $2, last_fired_at = coalesce($3, last_fired_at), "
                    "updated_at = clock_timestamp() WHERE id = $1",
                    row["id"], due.next_run_at, due.fire[-1] if created else None)
                task_ids += created
                task_kinds += [row["kind"]] * len(created)
                if due.skipped:
                    skipped[row["catchup"]] = skipped.get(row["catchup"], 0) + due.skipped
        return Firing(task_ids, task_kinds, skipped, unreadable)
