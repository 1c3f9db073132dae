"""PostgreSQL: the tasks table is the source of truth. Every state change is one conditional
UPDATE, so a duplicate delivery or a stale worker can never complete a task twice."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from taskplatform import kinds

# PostgreSQL cannot be reached or has no primary right now (a restart, a promotion): the
# request may be retried; it is not a bug. 57 = operator intervention (shutdown, starting up).
UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.TargetServerAttributeNotMatched,
               asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)

# The error recorded when a running attempt's lease expired: its worker died (kill -9, OOM) or
# stalled. SQL, evaluated on the row before the UPDATE.
_LOST_ATTEMPT = "'attempt ' || attempts || ' lost: its lease expired (the worker died or stalled)'"

_COLUMNS = ("id, tenant, kind, payload, status, attempts, max_attempts, result, error, "
            "created_at, updated_at, run_after, priority")

DEFAULT_PRIORITY = 5  # the column's default (migration 0009): a row an older release wrote has it


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(nodes: list[tuple[str, int]], database: str, user: str, password: str,
                      size: int = 10, target: str = "read-write", connect_timeout: float = 2.0) -> asyncpg.Pool:
    """A pool over PostgreSQL ``nodes`` (host, port). Each new connection tries them in order
    and keeps the first matching ``target``: "read-write" finds the primary, also after a
    promotion (connections to a stopped primary break, the pool reconnects to the new one);
    "prefer-standby" suits reads that tolerate replication lag."""
    return await asyncpg.create_pool(**connect_args(nodes, database, user, password, target, connect_timeout),
                                     min_size=1, max_size=size, init=_init_connection, reset=keep_session)


async def keep_session(conn: asyncpg.Connection) -> None:
    """A connection given back to the pool is kept as it is. asyncpg's default reset runs
    ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` after every use: a round trip
    of nothing after each of the platform's statements (a worker's claim and completion each
    paid one), since they leave no session state: no SET, no LISTEN, no cursor outside a
    transaction, advisory locks only transaction-scoped (``pg_advisory_xact_lock``). asyncpg
    still rolls back a transaction left open and drops listeners before this is called. Code
    that ever sets session state must undo it itself (``test_store``: the reset is skipped)."""


def connect_args(nodes: list[tuple[str, int]], database: str, user: str, password: str, target: str = "read-write",
                 connect_timeout: float = 2.0) -> dict:
    """What a pool's new connections are made with (``create_pool``; a pool moving to new
    credentials is given them again, ``Pool.set_connect_args``, which replaces them all)."""
    return {"host": [h for h, _ in nodes], "port": [p for _, p in nodes], "database": database, "user": user,
            "password": password, "target_session_attrs": target, "command_timeout": 10, "timeout": connect_timeout}


class IdempotencyKeyReused(Exception):
    """An idempotency key already names a task created from another request; ``index``: which
    item of a batch (None for a single create)."""

    def __init__(self, key: str | None, index: int | None = None):
        super().__init__(key)
        self.key, self.index = key, index


@dataclass(frozen=True)
class NewTask:
    """One task to create (``TaskStore.create_batch``): what ``TaskStore.create`` takes, per task."""
    kind: str
    payload: dict
    idempotency_key: str | None = None
    delay_seconds: float | None = None
    priority: int = DEFAULT_PRIORITY
    queue: str | None = None
    callback_url: str | None = None


class Create(NamedTuple):
    """One create request among those ``TaskStore.create_many`` commits together: whose task,
    what task, and its attempts."""
    tenant: str
    task: NewTask
    max_attempts: int


# The INSERT of both creates, from a relation ``src`` of the columns below (one row of
# parameters, or a batch's rows): ``scheduled`` with a delay (PostgreSQL's clock), else
# ``queued``; a (tenant, idempotency key) taken already inserts nothing (the caller reads it).
_INSERT = (
    "INSERT INTO tasks (id, tenant, kind, payload, max_attempts, idempotency_key, status, queued_at, run_after, "
    "  priority, queue, callback_url) "
    "SELECT id, tenant, kind, payload, max_attempts, idempotency_key, "
    "  CASE WHEN delay > 0 THEN 'scheduled' ELSE 'queued' END, "
    "  CASE WHEN delay > 0 THEN NULL ELSE clock_timestamp() END, "
    "  CASE WHEN delay > 0 THEN clock_timestamp() + make_interval(secs => delay) END, priority, queue, callback_url "
    "FROM {src} "
    "ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    f"RETURNING {_COLUMNS}")
_SRC = (("id", "uuid"), ("tenant", "text"), ("kind", "text"), ("payload", "jsonb"), ("max_attempts", "int"),
        ("idempotency_key", "text"), ("delay", "float8"), ("priority", "smallint"), ("queue", "text"),
        ("callback_url", "text"))
# One create's parameters $1..$10 as that relation; a batch's rows (JSON objects) as it, in the
# order of the unique index (tenant, idempotency_key) would take its keys: two statements that share
# keys (two batches, two group-committed creates) wait for each other instead of deadlocking.
_ONE = (f"(VALUES ({', '.join(f'${n}::{type_}' for n, (_, type_) in enumerate(_SRC, 1))})) "
        f"AS r({', '.join(name for name, _ in _SRC)})")
_MANY = (f"(SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(ord int, {', '.join(f'{n} {t}' for n, t in _SRC)}) "
         f"ORDER BY idempotency_key NULLS LAST, tenant, ord) AS r")
_TASK_COLUMNS = ", ".join(f"t.{column}" for column in _COLUMNS.split(", "))
# The same request under a key: kind, payload (as jsonb: 1.0 and 1 are the same number) and
# callback URL alike.
_SAME_REQUEST = "(t.kind = r.kind AND t.payload = r.payload AND t.callback_url IS NOT DISTINCT FROM r.callback_url)"


def task_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    doc.pop("same_request", None)
    doc.pop("ord", None)
    doc["id"] = str(doc["id"])
    for key in ("created_at", "updated_at", "run_after"):
        if key in doc:
            doc[key] = doc[key] and doc[key].isoformat()
    return doc


class Route(NamedTuple):
    """Where a queued task goes: its queue (None: its kind's, for a row an older release wrote)
    and priority. ``TaskStore.routes`` reads them for the tasks a worker queues or recovers."""
    id: uuid.UUID
    kind: str
    queue: str | None
    priority: int


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    kind: str
    payload: dict
    attempts: int
    max_attempts: int
    lease_token: uuid.UUID
    queued_seconds: float  # since the task was created


class TaskStore:
    def __init__(self, pool: asyncpg.Pool, read_pool: asyncpg.Pool | None = None):
        self.pool = pool
        self.read_pool = read_pool

    # --- API side ---------------------------------------------------------------------------
    async def create(self, tenant: str, kind: str, payload: dict, max_attempts: int,
                     idempotency_key: str | None, delay_seconds: float | None = None,
                     priority: int = DEFAULT_PRIORITY, queue: str | None = None,
                     callback_url: str | None = None) -> tuple[dict, bool]:
        """(task, created). The same (tenant, idempotency key) returns the first task when the
        request is the same (kind, payload — compared as jsonb: 1.0 and 1 are the same number —
        and callback URL); another request under that key raises ``IdempotencyKeyReused``. With
        ``delay_seconds`` the task is ``scheduled`` until then (PostgreSQL's clock: ``run_after``),
        and ``due_scheduled`` queues it. ``priority`` (0-9, higher first within its queue) and
        ``queue`` (the kind's; None: the kind's as the worker knows it) route it. With
        ``callback_url`` its terminal events are delivered there too (migration 0010's trigger)."""
        row = await self.pool.fetchrow(
            _INSERT.format(src=_ONE), uuid.uuid4(), tenant, kind, payload, max_attempts, idempotency_key,
            delay_seconds, priority, queue, callback_url)
        if row is not None:
            return task_json(row), True
        row = await self.pool.fetchrow(
            f"SELECT {_TASK_COLUMNS}, {_SAME_REQUEST} AS same_request "
            f"FROM tasks t, (VALUES ($3::text, $4::jsonb, $5::text)) AS r(kind, payload, callback_url) "
            f"WHERE t.tenant = $1 AND t.idempotency_key = $2", tenant, idempotency_key, kind, payload, callback_url)
        if not row["same_request"]:
            raise IdempotencyKeyReused(idempotency_key)
        return task_json(row), False

    async def create_many(self, creates: Sequence[Create]) -> list[tuple[dict, bool] | Exception]:
        """``create`` for several requests at once (the API's group commit, ``creates``): their
        rows in one INSERT, which commits them all or none, then one read of the rows their
        idempotency keys named already. Each gets what ``create`` would have given it: (task,
        created), or the exception ``create`` would have raised (``IdempotencyKeyReused``), as
        an answer. A request with the same (tenant, key) as one before it in the same call is
        that one's replay, as if they came one after the other. When the statement fails for
        what a row holds (an error of PostgreSQL's other than its being away), each request
        goes again alone, so one bad row fails only its own request; PostgreSQL away fails them
        all (it raises)."""
        if len(creates) == 1:
            return [await self._create_one(creates[0])]
        ids = [uuid.uuid4() for _ in creates]
        rows = [{"ord": i, "id": str(ids[i]), "tenant": c.tenant, "kind": c.task.kind, "payload": c.task.payload,
                 "max_attempts": c.max_attempts, "idempotency_key": c.task.idempotency_key,
                 "delay": c.task.delay_seconds, "priority": c.task.priority, "queue": c.task.queue,
                 "callback_url": c.task.callback_url} for i, c in enumerate(creates)]
        try:
            created = await self.pool.fetch(_INSERT.format(src=_MANY), rows)
        except UNAVAILABLE:
            raise
        except asyncpg.PostgresError:
            return [await self._create_one(c) for c in creates]
        answers: list[tuple[dict, bool] | Exception | None] = [None] * len(creates)
        index_of = {task_id: i for i, task_id in enumerate(ids)}
        for row in created:
            answers[index_of[row["id"]]] = (task_json(row), True)
        replayed = [rows[i] for i, answer in enumerate(answers) if answer is None]
        if replayed:
            for row in await self.pool.fetch(
                    f"SELECT {_TASK_COLUMNS}, {_SAME_REQUEST} AS same_request, r.ord "
                    f"FROM jsonb_to_recordset($1::jsonb) AS r(ord int, tenant text, kind text, payload jsonb, "
                    f"  idempotency_key text, callback_url text) "
                    f"JOIN tasks t ON t.tenant = r.tenant AND t.idempotency_key = r.idempotency_key", replayed):
                answers[row["ord"]] = ((task_json(row), False) if row["same_request"]
                                       else IdempotencyKeyReused(rows[row["ord"]]["idempotency_key"]))
        # A row gone between the two statements (retention deleted the finished task its key
        # named): that request alone, again.
        return [answer if answer is not None else await self._create_one(creates[i])
                for i, answer in enumerate(answers)]

    async def _create_one(self, create: Create) -> tuple[dict, bool] | Exception:
        """``create`` of one request, its refusal (an idempotency key reused, a row PostgreSQL
        refuses) as its answer; PostgreSQL away is raised."""
        task = create.task
        try:
            return await self.create(create.tenant, task.kind, task.payload, create.max_attempts,
                                     task.idempotency_key, task.delay_seconds, task.priority, task.queue,
                                     task.callback_url)
        except UNAVAILABLE:
            raise
        except (IdempotencyKeyReused, asyncpg.PostgresError) as exc:
            return exc

    async def create_batch(self, tenant: str, tasks: Sequence[NewTask], max_attempts: int) -> list[tuple[dict, bool]]:
        """(task, created) for each of ``tasks``, in order, all in one transaction: all or nothing.
        Each is created as ``create`` creates one; one whose idempotency key names a task of
        another request raises ``IdempotencyKeyReused`` with its index, and nothing of the batch
        is created. The keys must differ within the batch (the caller checks). Inserted in the
        order of their keys, so two batches that share keys wait for each other instead of
        deadlocking."""
        ids = [uuid.uuid4() for _ in tasks]
        rows = [{"ord": i, "id": str(ids[i]), "tenant": tenant, "kind": t.kind, "payload": t.payload,
                 "max_attempts": max_attempts, "idempotency_key": t.idempotency_key, "delay": t.delay_seconds,
                 "priority": t.priority, "queue": t.queue, "callback_url": t.callback_url} for i, t in enumerate(tasks)]
        results: list[tuple[dict, bool] | None] = [None] * len(tasks)
        async with self.pool.acquire() as conn, conn.transaction():
            created = await conn.fetch(_INSERT.format(src=_MANY), rows)
            index_of = {task_id: i for i, task_id in enumerate(ids)}
            for row in created:
                results[index_of[row["id"]]] = (task_json(row), True)
            replayed = [rows[i] for i, result in enumerate(results) if result is None]
            if replayed:
                existing = await conn.fetch(
                    f"SELECT {_TASK_COLUMNS}, {_SAME_REQUEST} AS same_request, r.ord "
                    f"FROM jsonb_to_recordset($2::jsonb) AS r(ord int, kind text, payload jsonb, idempotency_key text, "
                    f"  callback_url text) "
                    f"JOIN tasks t ON t.tenant = $1 AND t.idempotency_key = r.idempotency_key", tenant, replayed)
                for row in existing:
                    if not row["same_request"]:
                        raise IdempotencyKeyReused(rows[row["ord"]]["idempotency_key"], row["ord"])
                    results[row["ord"]] = (task_json(row), False)
        return results

    async def get(self, tenant: str, task_id: uuid.UUID) -> dict | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1 AND tenant = $2",
                                       task_id, tenant)
        return task_json(row) if row else None

    async def list(self, tenant: str, status: str | None, kind: str | None, limit: int,
                   after: tuple[dt.datetime, uuid.UUID] | None) -> list[dict]:
        """Newest first, keyset pagination on (created_at, id). May read from a replica."""
        clauses, args = ["tenant = $1"], [tenant]
        if status:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if kind:
            args.append(kind)
            clauses.append(f"kind = ${len(args)}")
        if after:
            args += [after[0], after[1]]
            clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        sql = (f"SELECT {_COLUMNS} FROM tasks WHERE {' AND '.join(clauses)} "
               f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}")
        if self.read_pool is not None:
            try:
                return [task_json(r) for r in await self.read_pool.fetch(sql, *args)]
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # a replica being down must not fail reads: the primary answers
        return [task_json(r) for r in await self.pool.fetch(sql, *args)]

    async def _tenant_transition(self, tenant: str, task_id: uuid.UUID, assignments: str,
                                 from_statuses: tuple[str, ...]) -> dict | None:
        """One conditional UPDATE of a tenant's task; None when it is not in ``from_statuses``."""
        row = await self.pool.fetchrow(
            f"UPDATE tasks SET {assignments}, run_after = NULL, updated_at = clock_timestamp() "
            f"WHERE id = $1 AND tenant = $2 AND status = ANY($3::text[]) RETURNING {_COLUMNS}",
            task_id, tenant, list(from_statuses))
        return task_json(row) if row else None

    async def cancel(self, tenant: str, task_id: uuid.UUID) -> dict | None:
        return await self._tenant_transition(tenant, task_id, "status = 'cancelled'",
                                             ("scheduled", "queued", "retry_wait"))

    async def redrive(self, tenant: str, task_id: uuid.UUID) -> dict | None:
        """A dead task starts over: attempts reset, error cleared, queued again. Attempts going
        back to 0 cannot let an old holder in: its writes also match a lease token, which only
        a new claim sets."""
        return await self._tenant_transition(
            tenant, task_id, "status = 'queued', queued_at = clock_timestamp(), attempts = 0, error = NULL, "
                             "lease_until = NULL, lease_token = NULL",
            ("dead",))

    # --- worker side ------------------------------------------------------------------------
    async def claim(self, task_id: uuid.UUID, lease_seconds: float,
                    runnable_kinds: Sequence[str] | None = None) -> tuple[Claimed | None, str | None]:
        """(claim, the kind of the task if this claim turned it dead, else None): ``claim_many``
        of one task."""
        return (await self.claim_many([task_id], lease_seconds, runnable_kinds))[task_id]

    async def claim_many(self, task_ids: Sequence[uuid.UUID], lease_seconds: float,
                         runnable_kinds: Sequence[str] | None = None
                         ) -> dict[uuid.UUID, tuple[Claimed | None, str | None]]:
        """For each of ``task_ids``: (claim, the kind of the task if this claim turned it dead,
        else None), in one statement. Queued → running, or a running task whose lease expired
        (its worker died): that lost attempt stays counted. The attempt is counted here, in the
        same conditional UPDATE, so a task that kills its worker every time still runs out of
        attempts: once none are left the claim turns it dead instead of running it again.
        A fresh lease token per task fences everything the holder of this attempt records later.
        A task of a kind not in ``runnable_kinds`` (disabled, or a newer release's) is left as
        it is, no attempt counted: a queued one waits for a worker that may run it.
        Ids are passed sorted, so that two workers claiming overlapping sets (a duplicate
        delivery) lock their rows in the same order as far as the plan walks the list in order;
        should they deadlock all the same, PostgreSQL fails one statement and its tasks are
        taken again from their messages (reclaimed once idle) or the reconciler."""
        ordered = sorted(set(task_ids))
        rows = await self.pool.fetch(
            "UPDATE tasks SET "
            "  status = CASE WHEN attempts < max_attempts THEN 'running' ELSE 'dead' END, "
            f" error = CASE WHEN status = 'running' THEN {_LOST_ATTEMPT} ELSE error END, "
            "  lease_token = CASE WHEN attempts < max_attempts THEN c.token END, "
            "  lease_until = CASE WHEN attempts < max_attempts "
            "    THEN clock_timestamp() + make_interval(secs => $3) END, "
            "  attempts = CASE WHEN attempts < max_attempts THEN attempts + 1 ELSE attempts END, "
            "  updated_at = clock_timestamp() "
            "FROM unnest($1::uuid[], $2::uuid[]) AS c(id, token) "
            "WHERE tasks.id = c.id "
            "  AND (status = 'queued' OR (status = 'running' AND lease_until < clock_timestamp())) "
            "  AND kind = ANY($4::text[]) "
            "RETURNING tasks.id, kind, payload, attempts, max_attempts, lease_token, status, "
            "  extract(epoch FROM clock_timestamp() - created_at)::float8 AS queued_seconds",
            ordered, [uuid.uuid4() for _ in ordered], lease_seconds,
            list(kinds.names() if runnable_kinds is None else runnable_kinds))
        outcomes: dict[uuid.UUID, tuple[Claimed | None, str | None]] = {task_id: (None, None) for task_id in ordered}
        for row in rows:
            if row["status"] == "dead":
                outcomes[row["id"]] = (None, row["kind"])
            else:
                outcomes[row["id"]] = (Claimed(**{k: v for k, v in dict(row).items() if k != "status"}), None)
        return outcomes

    async def renew_leases(self, claims: list[Claimed], lease_seconds: float) -> set[uuid.UUID]:
        """Extends the leases still held; returns the ids renewed (a missing one was lost)."""
        if not claims:
            return set()
        rows = await self.pool.fetch(
            "UPDATE tasks SET lease_until = clock_timestamp() + make_interval(secs => $3) "
            "FROM unnest($1::uuid[], $2::uuid[]) AS c(id, token) "
            "WHERE tasks.id = c.id AND tasks.lease_token = c.token AND tasks.status = 'running' "
            "RETURNING tasks.id", [c.id for c in claims], [c.lease_token for c in claims], lease_seconds)
        return {r["id"] for r in rows}

    # Every write of a holder matches its attempt and its lease token: attempts alone can repeat
    # (a hand-back gives one back, a re-drive starts over), the token never does. Attempts are
    # matched too, for rows claimed by a release that does not write tokens yet.
    _HELD = "id = $1 AND attempts = $2 AND lease_token = $3 AND status = 'running'"

    async def complete(self, claim: Claimed, result: dict) -> bool:
        """Only the holder of this attempt may complete it: idempotent under duplicates."""
        return claim.id in await self.complete_many([(claim, result)])

    async def complete_many(self, outcomes: Sequence[tuple[Claimed, dict]]) -> set[uuid.UUID]:
        """Each (claim, result) recorded as succeeded, in one statement (one commit for all):
        the ids completed. Only the holder of each attempt may complete it (its attempt and
        lease token match): idempotent under duplicates. Locked in id order, as ``claim_many``."""
        ordered = sorted(outcomes, key=lambda outcome: outcome[0].id)
        rows = await self.pool.fetch(
            "UPDATE tasks SET status = 'succeeded', result = c.result::jsonb, error = NULL, lease_until = NULL, "
            "lease_token = NULL, updated_at = clock_timestamp() "
            "FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[]) AS c(id, attempts, token, result) "
            "WHERE tasks.id = c.id AND tasks.attempts = c.attempts AND tasks.lease_token = c.token "
            "  AND tasks.status = 'running' "
            "RETURNING tasks.id",
            [c.id for c, _ in ordered], [c.attempts for c, _ in ordered], [c.lease_token for c, _ in ordered],
            [json.dumps(result) for _, result in ordered])
        return {row["id"] for row in rows}

    async def fail(self, claim: Claimed, error: str, retry_delay: float | None) -> str | None:
        """retry_wait (with run_after) while attempts remain, else dead. Returns the new status."""
        new_status = "retry_wait" if retry_delay is not None else "dead"
        status = await self.pool.execute(
            "UPDATE tasks SET status = $4, error = $5, lease_until = NULL, lease_token = NULL, "
            "run_after = CASE WHEN $4 = 'retry_wait' THEN clock_timestamp() + make_interval(secs => $6) END, "
            f"updated_at = clock_timestamp() WHERE {self._HELD}",
            claim.id, claim.attempts, claim.lease_token, new_status, error[:2000], retry_delay or 0.0)
        return new_status if status.endswith(" 1") else None

    async def hand_back(self, claim: Claimed) -> bool:
        """Shutdown: give an unfinished attempt back (it does not count). The token is cleared,
        so whatever the cancelled attempt still does cannot touch the next holder's attempt."""
        status = await self.pool.execute(
            "UPDATE tasks SET status = 'queued', queued_at = clock_timestamp(), attempts = attempts - 1, "
            "lease_until = NULL, lease_token = NULL, "
            f"updated_at = clock_timestamp() - interval '1 day' WHERE {self._HELD}",
            claim.id, claim.attempts, claim.lease_token)
        return status.endswith(" 1")

    async def due_retries(self, limit: int = 500) -> list[uuid.UUID]:
        """Failed attempts' tasks whose retry is due, queued again."""
        return await self._due("retry_wait", limit)

    async def due_scheduled(self, limit: int = 500) -> list[uuid.UUID]:
        """Delayed tasks (``run_at``, ``delay_seconds``) whose time has come, queued. One
        conditional UPDATE over rows locked with SKIP LOCKED: however many workers ask at once,
        each task is queued by one of them, once; the claim then runs it once."""
        return await self._due("scheduled", limit)

    async def _due(self, status: str, limit: int) -> list[uuid.UUID]:
        rows = await self.pool.fetch(
            "UPDATE tasks SET status = 'queued', queued_at = clock_timestamp(), run_after = NULL, "
            "updated_at = clock_timestamp() "
            "WHERE id IN (SELECT id FROM tasks WHERE status = $2 AND run_after <= clock_timestamp() "
            "ORDER BY run_after LIMIT $1 FOR UPDATE SKIP LOCKED) AND status = $2 RETURNING id", limit, status)
        return [r["id"] for r in rows]

    async def expire_leases(self, limit: int) -> tuple[list[uuid.UUID], list[str]]:
        """(tasks queued again, the kind of each task that went dead): running under an expired lease, their
        worker died or stalled. That lost attempt was counted at claim and stays so: queued
        again while attempts remain, else dead."""
        rows = await self.pool.fetch(
            "UPDATE tasks SET "
            "  status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END, "
            "  queued_at = CASE WHEN attempts >= max_attempts THEN queued_at ELSE clock_timestamp() END, "
            f" error = {_LOST_ATTEMPT}, lease_until = NULL, lease_token = NULL, updated_at = clock_timestamp() "
            "WHERE id IN (SELECT id FROM tasks WHERE status = 'running' AND lease_until < clock_timestamp() "
            "  ORDER BY updated_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, status, kind", limit)
        return [r["id"] for r in rows if r["status"] == "queued"], [r["kind"] for r in rows if r["status"] == "dead"]

    async def take_overdue(self, queued_for_seconds: float, limit: int,
                           runnable_kinds: Sequence[str]) -> list[uuid.UUID]:
        """The oldest tasks of ``runnable_kinds`` queued for longer than ``queued_for_seconds``
        (their message was lost with a failed enqueue or a Redis failover, or waits behind a
        backlog, or their kind was disabled), marked as taken now (``updated_at``) so that other
        workers leave them alone for that long again. Those of other kinds are not taken: the
        claim would leave them, and taken again and again they would use up the room of the
        tasks that can run."""
        rows = await self.pool.fetch(
            "UPDATE tasks SET updated_at = clock_timestamp() "
            "WHERE id IN (SELECT id FROM tasks WHERE status = 'queued' AND kind = ANY($3::text[]) "
            "  AND updated_at < clock_timestamp() - make_interval(secs => $1::float8) "
            "  ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
            queued_for_seconds, limit, list(runnable_kinds))
        return [r["id"] for r in rows]

    async def delete_finished(self, default_seconds: float | None, by_kind: dict[str, float],
                              by_tenant: dict[str, float], limit: int = 500) -> list[str]:
        """Retention: deletes at most ``limit`` finished tasks (succeeded, dead, cancelled) older
        than their period — their tenant's, else their kind's, else ``default_seconds``; none
        given: kept —, oldest first, with their schedule occurrences' records; returns the kind
        of each. A short statement over the ``tasks_finished`` index that locks only the rows it
        deletes (``SKIP LOCKED``: workers share the work): creates go on meanwhile."""
        rows = await self.pool.fetch(
            "WITH expired AS ("
            "  SELECT id FROM tasks t WHERE status IN ('succeeded', 'dead', 'cancelled') "
            "  AND updated_at < clock_timestamp() - make_interval(secs => coalesce("
            "    (SELECT r.s FROM unnest($1::text[], $2::float8[]) AS r(name, s) WHERE r.name = t.tenant), "
            "    (SELECT r.s FROM unnest($3::text[], $4::float8[]) AS r(name, s) WHERE r.name = t.kind), $5::float8)) "
            "  ORDER BY updated_at LIMIT $6 FOR UPDATE SKIP LOCKED), "
            "gone AS (DELETE FROM tasks WHERE id IN (SELECT id FROM expired) RETURNING id, kind), "
            "records AS (DELETE FROM schedule_occurrences WHERE task_id IN (SELECT id FROM gone)) "
            "SELECT kind FROM gone",
            list(by_tenant), list(by_tenant.values()), list(by_kind), list(by_kind.values()), default_seconds, limit)
        return [r["kind"] for r in rows]

    async def routes(self, task_ids: Sequence[uuid.UUID]) -> list[Route]:
        """The queue and priority of each of ``task_ids`` (those that exist), in one primary-key
        lookup: for the tasks a worker queues (due retries, scheduled, fired) or recovers."""
        if not task_ids:
            return []
        rows = await self.pool.fetch("SELECT id, kind, queue, priority FROM tasks WHERE id = ANY($1::uuid[])",
                                     list(task_ids))
        found = {r["id"]: Route(r["id"], r["kind"], r["queue"], r["priority"]) for r in rows}
        return [found[task_id] for task_id in task_ids if task_id in found]

    async def queue_stats_by_queue(self) -> list[tuple[str, str | None, int, float]]:
        """(kind, queue, tasks queued, seconds the oldest has waited) per kind and queue of the
        queued tasks: the worker maps a row without a queue to its kind's. Over the
        rows of status queued alone (``tasks_unfinished``); each row's heap is read for its kind
        and queue, so it costs in proportion to the backlog (not measured at a large one)."""
        rows = await self.pool.fetch(
            "SELECT kind, queue, count(*) AS queued, "
            "  extract(epoch FROM clock_timestamp() - min(coalesce(queued_at, created_at)))::float8 AS oldest "
            "FROM tasks WHERE status = 'queued' GROUP BY kind, queue")
        return [(r["kind"], r["queue"], r["queued"], max(0.0, r["oldest"] or 0.0)) for r in rows]
