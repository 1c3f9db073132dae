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
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

_SUBSCRIPTION = "id, url, events, description, created_at, updated_at"
_DELIVERY = ("d.id, d.subscription_id, d.event_id, e.type AS event_type, e.task_id, d.status, d.attempts, "
             "d.next_attempt_at, d.created_at, d.updated_at")
# The most recent attempts shown with each delivery of a page (a delivery redelivered by hand
# many times keeps all of them in the table).
LOG_PER_DELIVERY = 25


def _iso(value):
    return value and value.isoformat()


def subscription_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    doc["id"] = str(doc["id"])
    doc["created_at"], doc["updated_at"] = _iso(doc["created_at"]), _iso(doc["updated_at"])
    return doc


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    doc = dict(row)
    for key in ("id", "subscription_id", "event_id", "task_id"):
        doc[key] = str(doc[key])
    for key in ("next_attempt_at", "created_at", "updated_at"):
        doc[key] = _iso(doc[key])
    if doc["status"] != "pending":
        doc["next_attempt_at"] = None
    doc["log"] = doc.get("log") or []  # jsonb: its instants are already RFC 3339 text
    return doc


@dataclass(frozen=True)
class Claimed:
    """A delivery a dispatcher holds: what to send where, and the lease that fences its outcome."""
    id: uuid.UUID
    subscription_id: uuid.UUID
    url: str
    secret: str
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
            rows = await conn.fetch(
                f"SELECT {_DELIVERY}, (SELECT coalesce(jsonb_agg(jsonb_build_object("
                f"    'attempt', a.attempt, 'status_code', a.status_code, 'error', a.error, "
                f"    'duration_ms', a.duration_ms, 'at', a.at) ORDER BY a.id DESC), '[]') FROM ("
                f"  SELECT * FROM webhook_attempts WHERE delivery_id = d.id ORDER BY id DESC LIMIT {LOG_PER_DELIVERY}"
                f") a) AS log "
                f"FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE d.subscription_id = $1 "
                f"AND ($3::timestamptz IS NULL OR (d.created_at, d.id) < ($3, $4::uuid)) "
                f"ORDER BY d.created_at DESC, d.id DESC LIMIT $2",
                subscription_id, limit, after and after[0], after and after[1])
        return [delivery_json(r) for r in rows]

    async def redeliver(self, tenant: str, subscription_id: uuid.UUID,
                        delivery_id: uuid.UUID) -> tuple[dict | None, bool]:
        """(the delivery, whether it was queued again). A finished one (succeeded or failed) is
        due again now with a fresh budget of attempts and the same event (id and body); a
        pending one is left as it is (it will be tried anyway). None: no such delivery."""
        async with self.pool.acquire() as conn:
            moved = await conn.fetchval(
                "UPDATE webhook_deliveries d SET status = 'pending', attempts = 0, next_attempt_at = clock_timestamp(), "
                "  lease_until = NULL, lease_token = NULL, updated_at = clock_timestamp() "
                "FROM webhook_subscriptions s WHERE d.id = $1 AND d.subscription_id = $2 AND s.id = d.subscription_id "
                "  AND s.tenant = $3 AND d.status <> 'pending' RETURNING true", delivery_id, subscription_id, tenant)
            row = await conn.fetchrow(
                f"SELECT {_DELIVERY}, '[]'::jsonb AS log FROM webhook_deliveries d "
                f"JOIN webhook_events e ON e.id = d.event_id JOIN webhook_subscriptions s ON s.id = d.subscription_id "
                f"WHERE d.id = $1 AND d.subscription_id = $2 AND s.tenant = $3", delivery_id, subscription_id, tenant)
        return (delivery_json(row) if row else None), bool(moved)

    # --- worker side ------------------------------------------------------------------------
    async def claim_due(self, limit: int, lease_seconds: float) -> list[Claimed]:
        """Up to ``limit`` deliveries due now (pending, their time come, not held under a live
        lease), oldest first, each with its attempt counted and a lease of ``lease_seconds``."""
        rows = await self.pool.fetch(
            "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' "
            "  AND next_attempt_at <= clock_timestamp() AND (lease_until IS NULL OR lease_until < clock_timestamp()) "
            "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
            "claimed AS (UPDATE webhook_deliveries d SET attempts = d.attempts + 1, lease_token = gen_random_uuid(), "
            "  lease_until = clock_timestamp() + make_interval(secs => $2), updated_at = clock_timestamp() "
            "  FROM due WHERE d.id = due.id RETURNING d.*) "
            "SELECT c.id, c.subscription_id, s.url, s.secret, e.id AS event_id, e.type AS event_type, "
            "  e.created_at AS event_at, e.task, c.attempts, c.lease_token "
            "FROM claimed c JOIN webhook_subscriptions s ON s.id = c.subscription_id "
            "JOIN webhook_events e ON e.id = c.event_id", limit, lease_seconds)
        return [Claimed(**dict(r)) for r in rows]

    async def record(self, claim: Claimed, status_code: int | None, error: str | None, duration_ms: float,
                     outcome: str, retry_in_seconds: float | None) -> bool:
        """The attempt in the log, and the delivery moved on (``outcome``: succeeded, failed, or
        pending again in ``retry_in_seconds``) — only by the holder of this attempt's lease
        (a redelivery or a dispatcher that took it over after the lease expired fences it out).
        False: not the holder any more; nothing recorded."""
        async with self.pool.acquire() as conn, conn.transaction():
            moved = await conn.fetchval(
                "UPDATE webhook_deliveries SET status = $3, lease_until = NULL, lease_token = NULL, "
                "  next_attempt_at = CASE WHEN $3 = 'pending' THEN clock_timestamp() + make_interval(secs => $4) "
                "    ELSE next_attempt_at END, updated_at = clock_timestamp() "
                "WHERE id = $1 AND lease_token = $2 AND status = 'pending' RETURNING true",
                claim.id, claim.lease_token, outcome, retry_in_seconds or 0.0)
            if moved:
                await conn.execute("INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms) "
                                   "VALUES ($1, $2, $3, $4, $5)", claim.id, claim.attempts, status_code,
                                   error and error[:1000], duration_ms)
        return bool(moved)

    async def hand_back(self, claim: Claimed) -> None:
        """Shutdown: a delivery not finished is due again at once, that attempt not counted."""
        await self.pool.execute(
            "UPDATE webhook_deliveries SET attempts = attempts - 1, lease_until = NULL, lease_token = NULL, "
            "updated_at = clock_timestamp() WHERE id = $1 AND lease_token = $2 AND status = 'pending'",
            claim.id, claim.lease_token)
