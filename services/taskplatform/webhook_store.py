"""PostgreSQL: a tenant's webhook subscriptions and their deliveries (API side), and the
dispatchers' claims and outcomes (worker side). Events and deliveries are written by the trigger
of migration 0008, in the transaction that changes a task's status (the outbox); this module
reads them and moves deliveries on.

A delivery is claimed like a task: one conditional UPDATE over due rows taken with ``FOR UPDATE
SKIP LOCKED`` counts the attempt and writes a lease (``lease_until``) and a fresh token, so two
dispatchers never send one delivery at once, and the outcome is recorded only by the token's
holder. The row lock lasts for the claim only, not the HTTP request (a slow receiver holds no
connection of the pool). A dispatcher that dies mid-request leaves a lease that expires: another
one sends the delivery again, with the same event id (at least once).

A task's ``callback_url`` has deliveries of its own, in the same table without a subscription
(``subscription_id`` NULL, ``callback_url`` and ``tenant`` set), signed with the tenant's callback
secret (``webhook_callback_secrets``); claimed, sent, retried and logged as the others. While no
dispatcher holds one its ``lease_until`` is ``infinity`` (``_UNHELD_LEASE``), so that a release
before migration 0010 never claims one (migration 0010 says why); a delivery is held when it has a
``lease_token``.

A rotated secret (``rotate_secret``, ``set_callback_secret``) keeps signing beside the new one
until its ``previous_secret_expires_at``: the claim hands the dispatcher every secret still
signing, the current one first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

# The end of a rotated-out secret's overlap, shown only while it still signs.
_PREVIOUS_EXPIRES = ("CASE WHEN previous_secret_expires_at > clock_timestamp() THEN previous_secret_expires_at END "
                     "AS previous_secret_expires_at")
_SUBSCRIPTION = f"id, url, events, description, created_at, updated_at, {_PREVIOUS_EXPIRES}"
_DELIVERY = ("d.id, d.subscription_id, d.callback_url, d.event_id, e.type AS event_type, e.task_id, d.status, "
             "d.attempts, d.next_attempt_at, d.created_at, d.updated_at")
# ``lease_until`` of a delivery nobody holds (see the module's text): NULL, or ``infinity`` for a
# callback's.
_UNHELD_LEASE = "CASE WHEN subscription_id IS NULL THEN 'infinity'::timestamptz END"
# A page of deliveries' rows with their most recent attempts (``log``, newest first); the caller
# adds the WHERE clause (its first parameter is the owner: a subscription or a tenant) and
# $2 = limit, $3/$4 = the cursor.
_DELIVERY_PAGE = (
    f"SELECT {_DELIVERY}, (SELECT coalesce(jsonb_agg(jsonb_build_object("
    f"    'attempt', a.attempt, 'status_code', a.status_code, 'error', a.error, "
    f"    'duration_ms', a.duration_ms, 'at', a.at) ORDER BY a.id DESC), '[]') FROM ("
    f"  SELECT * FROM webhook_attempts WHERE delivery_id = d.id ORDER BY id DESC LIMIT {{log}}"
    f") a) AS log "
    f"FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE {{owner}} "
    f"AND ($3::timestamptz IS NULL OR (d.created_at, d.id) < ($3, $4::uuid)) "
    f"ORDER BY d.created_at DESC, d.id DESC LIMIT $2")
# The most recent attempts shown with each delivery of a page (a delivery redelivered by hand
# many times keeps all of them in the table).
LOG_PER_DELIVERY = 25


def _iso(value):
    return value and value.isoformat()


def subscription_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    doc["id"] = str(doc["id"])
    for key in ("created_at", "updated_at", "previous_secret_expires_at"):
        doc[key] = _iso(doc[key])
    return doc


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    for key in ("id", "subscription_id", "event_id", "task_id"):
        doc[key] = doc[key] and str(doc[key])
    for key in ("next_attempt_at", "created_at", "updated_at"):
        doc[key] = _iso(doc[key])
    if doc["status"] != "pending":
        doc["next_attempt_at"] = None
    doc["log"] = doc.get("log") or []  # jsonb: its instants are already RFC 3339 text
    return doc


@dataclass(frozen=True)
class Claimed:
    """A delivery a dispatcher holds: what to send where, signed with which secrets (the current
    one first; none: a callback whose tenant has no callback secret), and the lease that fences
    its outcome."""
    id: uuid.UUID
    subscription_id: uuid.UUID | None  # None: a task's callback
    url: str
    secrets: list[str]
    event_id: uuid.UUID
    event_type: str
    event_at: dt.datetime
    task: dict
    attempts: int
    lease_token: uuid.UUID


class WebhookStore:
    def __init__(self, pool):
        self.pool = pool

    # --- API side ---------------------------------------------------------------------------
    async def create(self, tenant: str, url: str, events: list[str], description: str, secret: str) -> dict:
        row = await self.pool.fetchrow(
            f"INSERT INTO webhook_subscriptions (id, tenant, url, events, description, secret) "
            f"VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_SUBSCRIPTION}",
            uuid.uuid4(), tenant, url, sorted(set(events)), description, secret)
        return subscription_json(row)

    async def get(self, tenant: str, subscription_id: uuid.UUID) -> dict | None:
        row = await self.pool.fetchrow(f"SELECT {_SUBSCRIPTION} FROM webhook_subscriptions "
                                       f"WHERE id = $1 AND tenant = $2", subscription_id, tenant)
        return subscription_json(row) if row else None

    async def list(self, tenant: str, limit: int, after: tuple[dt.datetime, uuid.UUID] | None) -> list[dict]:
        """Newest first, keyset pagination on (created_at, id), as the tasks' list."""
        rows = await self.pool.fetch(
            f"SELECT {_SUBSCRIPTION} FROM webhook_subscriptions WHERE tenant = $1 "
            f"AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid)) "
            f"ORDER BY created_at DESC, id DESC LIMIT $2", tenant, limit, after and after[0], after and after[1])
        return [subscription_json(r) for r in rows]

    async def rotate_secret(self, tenant: str, subscription_id: uuid.UUID, secret: str,
                            overlap_seconds: float) -> dict | None:
        """The subscription signing with ``secret`` from now on, and with the secret it replaces
        too for ``overlap_seconds`` (a secret rotated out before is dropped: two sign at most).
        None: no such subscription of the tenant."""
        row = await self.pool.fetchrow(
            f"UPDATE webhook_subscriptions SET previous_secret = secret, secret = $3, "
            f"  previous_secret_expires_at = clock_timestamp() + make_interval(secs => $4), "
            f"  updated_at = clock_timestamp() WHERE id = $1 AND tenant = $2 RETURNING {_SUBSCRIPTION}",
            subscription_id, tenant, secret, overlap_seconds)
        return subscription_json(row) if row else None

    async def set_callback_secret(self, tenant: str, secret: str, overlap_seconds: float) -> dict:
        """The tenant's callback secret: made, or rotated as a subscription's (``rotate_secret``)."""
        row = await self.pool.fetchrow(
            f"INSERT INTO webhook_callback_secrets AS k (tenant, secret) VALUES ($1, $2) "
            f"ON CONFLICT (tenant) DO UPDATE SET previous_secret = k.secret, secret = excluded.secret, "
            f"  previous_secret_expires_at = clock_timestamp() + make_interval(secs => $3), "
            f"  updated_at = clock_timestamp() "
            f"RETURNING created_at, updated_at, {_PREVIOUS_EXPIRES}", tenant, secret, overlap_seconds)
        return {key: _iso(value) for key, value in row.items()}

    async def has_callback_secret(self, tenant: str) -> bool:
        return bool(await self.pool.fetchval("SELECT true FROM webhook_callback_secrets WHERE tenant = $1", tenant))

    async def delete(self, tenant: str, subscription_id: uuid.UUID) -> bool:
        """Gone with its deliveries and their log (a delivery in flight records nothing after)."""
        status = await self.pool.execute("DELETE FROM webhook_subscriptions WHERE id = $1 AND tenant = $2",
                                         subscription_id, tenant)
        return status.endswith(" 1")

    async def deliveries(self, tenant: str, subscription_id: uuid.UUID, limit: int,
                         after: tuple[dt.datetime, uuid.UUID] | None) -> list[dict] | None:
        """A page of the subscription's deliveries, newest first, each with its most recent
        attempts (``log``, newest first); None: no such subscription of the tenant."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT true FROM webhook_subscriptions WHERE id = $1 AND tenant = $2",
                                       subscription_id, tenant):
                return None
            rows = await conn.fetch(_page_sql("d.subscription_id = $1"), subscription_id, limit,
                                    after and after[0], after and after[1])
        return [delivery_json(r) for r in rows]

    async def callback_deliveries(self, tenant: str, limit: int,
                                  after: tuple[dt.datetime, uuid.UUID] | None) -> list[dict]:
        """A page of the deliveries to the tenant's tasks' ``callback_url``s, as ``deliveries``."""
        rows = await self.pool.fetch(_page_sql("d.tenant = $1 AND d.subscription_id IS NULL"), tenant, limit,
                                     after and after[0], after and after[1])
        return [delivery_json(r) for r in rows]

    async def redeliver(self, tenant: str, subscription_id: uuid.UUID | None,
                        delivery_id: uuid.UUID) -> tuple[dict | None, bool]:
        """(the delivery, whether it was queued again). A finished one (succeeded or failed) is
        due again now with a fresh budget of attempts and the same event (id and body); a
        pending one is left as it is (it will be tried anyway). None: no such delivery — of
        the tenant's subscription ``subscription_id``, or of its callbacks when that is None."""
        owner = ("d.subscription_id IS NULL AND d.tenant = $3 AND $2::uuid IS NULL" if subscription_id is None else
                 "d.subscription_id = $2 AND EXISTS (SELECT 1 FROM webhook_subscriptions s "
                 "  WHERE s.id = d.subscription_id AND s.tenant = $3)")
        # The delivery as the UPDATE left it, in the same statement: a dispatcher may claim it the
        # moment the UPDATE commits (its attempts counted again), and a second look would show that.
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"UPDATE webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), "
                f"  lease_until = {_UNHELD_LEASE}, lease_token = NULL, updated_at = clock_timestamp() "
                f"FROM webhook_events e WHERE e.id = d.event_id AND d.id = $1 AND {owner} AND d.status <> 'pending' "
                f"RETURNING {_DELIVERY}, '[]'::jsonb AS log",
                delivery_id, subscription_id, tenant)
            moved = row is not None
            if not moved:
                row = await conn.fetchrow(
                    f"SELECT {_DELIVERY}, '[]'::jsonb AS log FROM webhook_deliveries d "
                    f"JOIN webhook_events e ON e.id = d.event_id WHERE d.id = $1 AND {owner}",
                    delivery_id, subscription_id, tenant)
        return (delivery_json(row) if row else None), moved

    # --- worker side ------------------------------------------------------------------------
    async def claim_due(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Up to ``limit`` deliveries due now (pending, their time come, not held under a live
        lease), oldest first, each with its attempt counted and a lease of ``lease_seconds``."""
        rows = await self.pool.fetch(
            "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' "
            "  AND next_attempt_at <= clock_timestamp() AND (lease_token IS NULL OR lease_until < clock_timestamp()) "
            "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE webhook_deliveries d SET attempts = d.attempts + 1, lease_token = gen_random_uuid(), "
            "  lease_until = clock_timestamp() + make_interval(secs => $2), updated_at = clock_timestamp() "
            "  FROM due WHERE d.id = due.id RETURNING d.*) "
            "SELECT c.id, c.subscription_id, coalesce(t.url, c.callback_url) AS url, "
            "  array_remove(ARRAY[t.secret, CASE WHEN t.previous_secret_expires_at > clock_timestamp() "
            "    THEN t.previous_secret END], NULL) AS secrets, "
            "  e.id AS event_id, e.type AS event_type, e.created_at AS event_at, e.task, c.attempts, c.lease_token "
            "FROM claimed c JOIN webhook_events e ON e.id = c.event_id "
            # Where it goes and the secrets that sign it: its subscription's, or its tenant's callback secrets.
            "LEFT JOIN LATERAL ("
            "  SELECT url, secret, previous_secret, previous_secret_expires_at FROM webhook_subscriptions "
            "  WHERE id = c.subscription_id "
            "  UNION ALL SELECT c.callback_url, secret, previous_secret, previous_secret_expires_at "
            "  FROM webhook_callback_secrets WHERE c.subscription_id IS NULL AND tenant = c.tenant) t ON true",
            limit, lease_seconds)
        return [Claimed(**dict(r)) for r in rows]

    async def record(self, claim: Claimed, status_code: int | None, error: str | None, duration_ms: float,
                     outcome: str, retry_in_seconds: float | None) -> bool:
        """The attempt in the log, and the delivery moved on (``outcome``: succeeded, failed, or
        pending again in ``retry_in_seconds``) — only by the holder of this attempt's lease
        (a redelivery or a dispatcher that took it over after the lease expired fences it out).
        False: not the holder any more; nothing recorded."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                f"UPDATE webhook_deliveries SET status = $3, lease_until = {_UNHELD_LEASE}, lease_token = NULL, "
                f"  next_attempt_at = CASE WHEN $3 = 'pending' THEN clock_timestamp() + make_interval(secs => $4) "
                f"    ELSE next_attempt_at END, updated_at = clock_timestamp() "
                f"WHERE id = $1 AND lease_token = $2 AND status = 'pending' RETURNING true",
                claim.id, claim.lease_token, outcome, retry_in_seconds or 0.0)
            if moved:
                await conn.execute("INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) "
                                   "VALUES ($1, $2, $3, $4, $5)", claim.id, claim.attempts, status_code,
                                   error and error[:1000], duration_ms)
        return bool(moved)

    async def hand_back(self, claim: Claimed) -> None:
        """Shutdown: a delivery not finished is due again at once, that attempt not counted."""
        await self.pool.execute(
            f"UPDATE webhook_deliveries SET attempts = attempts - 1, lease_until = {_UNHELD_LEASE}, lease_token = NULL, "
            f"updated_at = clock_timestamp() WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
            claim.id, claim.lease_token)

    async def delete_finished(self, retention_seconds: float, limit: int = 500) -> int:
        """Retention: deletes at most ``limit`` deliveries finished (succeeded or failed) longer
        than ``retention_seconds`` ago, oldest first, with their attempts' log and the events no
        delivery refers to any more; returns how many deliveries. As the tasks'
        (``TaskStore.delete_finished``): a short statement over an index of the finished ones
        (``webhook_deliveries_finished``) that locks only the rows it deletes (``SKIP LOCKED``:
        workers share the work), pending deliveries untouched."""
        return await self.pool.fetchval(
            "WITH expired AS ("
            "  SELECT id FROM webhook_deliveries WHERE status <> 'pending' "
            "  AND updated_at < clock_timestamp() - make_interval(secs => $1) "
            "  ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "gone AS (DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM expired) RETURNING id, event_id), "
            # One snapshot for the whole statement: the deliveries deleted above are still seen here.
            "events AS (DELETE FROM webhook_events e WHERE e.id IN (SELECT event_id FROM gone) AND NOT EXISTS ("
            "  SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.id NOT IN (SELECT id FROM gone))) "
            "SELECT count(*) FROM gone", retention_seconds, limit)


def _page_sql(owner: str) -> str:
    return _DELIVERY_PAGE.format(owner=owner, log=LOG_PER_DELIVERY)
