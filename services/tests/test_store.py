"""The store's state machine against the real PostgreSQL, driven directly (no worker process):
attempts are counted at claim and run out, and every write of a holder is fenced by the lease
token of its claim, so an attempt that lost its task can record nothing on the next one."""

import asyncio
import uuid

import asyncpg
import psycopg
import pytest

from taskplatform import store
from taskplatform.schedules import ScheduleStore
from taskplatform.webhook_store import WebhookStore


def run_with_store(platform, scenario):
    async def main():
        pool = await store.create_pool([("127.0.0.1", platform.pg.port)], platform.pg.database, platform.pg.user,
                                       platform.pg.password, size=2)
        try:
            await scenario(store.TaskStore(pool), pool)
        finally:
            await pool.close()
    asyncio.run(main())


async def new_task(tasks: store.TaskStore, max_attempts: int = 3) -> uuid.UUID:
    task, _ = await tasks.create(f"tenant-{uuid.uuid4().hex[:8]}", "checksum", {}, max_attempts, None)
    return uuid.UUID(task["id"])


async def expire_lease(pool, task_id: uuid.UUID) -> None:
    """What happens when the holder is killed -9: nobody renews, the lease runs out."""
    await pool.execute("UPDATE tasks SET lease_until = clock_timestamp() - interval '1 second' WHERE id = $1", task_id)


async def row(pool, task_id: uuid.UUID) -> dict:
    return dict(await pool.fetchrow("SELECT status, attempts, error, lease_token FROM tasks WHERE id = $1", task_id))


def test_a_handed_back_attempt_cannot_complete_the_next_holders_attempt(platform):
    async def scenario(tasks, pool):
        task_id = await new_task(tasks)
        old, _ = await tasks.claim(task_id, 30)
        assert await tasks.hand_back(old)  # shutdown; its body swallows the cancellation and runs on
        new, _ = await tasks.claim(task_id, 30)
        assert new.attempts == old.attempts == 1 and new.lease_token != old.lease_token
        assert await tasks.renew_leases([old], 30) == set()
        assert not await tasks.complete(old, {"from": "the old attempt"})
        assert await tasks.fail(old, "late failure", None) is None
        assert not await tasks.hand_back(old)
        assert await tasks.renew_leases([new], 30) == {task_id}
        assert await tasks.complete(new, {"from": "the new attempt"})
        assert (await pool.fetchval("SELECT result FROM tasks WHERE id = $1", task_id)) == {"from": "the new attempt"}
    run_with_store(platform, scenario)


def test_a_redriven_task_fences_out_the_holder_of_its_first_run(platform):
    async def scenario(tasks, pool):
        task_id = await new_task(tasks, max_attempts=1)
        first, _ = await tasks.claim(task_id, 30)
        await expire_lease(pool, task_id)
        _, dead = await tasks.expire_leases(limit=1000)
        assert dead == ["checksum"] and (await row(pool, task_id))["status"] == "dead"
        tenant = await pool.fetchval("SELECT tenant FROM tasks WHERE id = $1", task_id)
        assert (await tasks.redrive(tenant, task_id))["attempts"] == 0
        second, _ = await tasks.claim(task_id, 30)
        assert second.attempts == first.attempts == 1
        assert not await tasks.complete(first, {"stale": True})  # the stalled first holder wakes up
        assert await tasks.complete(second, {"fresh": True})
    run_with_store(platform, scenario)


def test_lost_attempts_count_and_the_claim_ends_a_crash_looping_task(platform):
    async def scenario(tasks, pool):
        task_id = await new_task(tasks, max_attempts=3)
        for attempt in (1, 2, 3):
            claim, dead = await tasks.claim(task_id, 30)  # a redelivered message takes over the expired lease
            assert claim is not None and claim.attempts == attempt and not dead
            assert await tasks.claim(task_id, 30) == (None, None)  # a live lease is not taken
            await expire_lease(pool, task_id)
        assert await tasks.claim(task_id, 30) == (None, "checksum")
        state = await row(pool, task_id)
        assert state["status"] == "dead" and state["attempts"] == 3 and state["lease_token"] is None
        assert "attempt 3 lost" in state["error"]
        assert await tasks.claim(task_id, 30) == (None, None)
    run_with_store(platform, scenario)


@pytest.mark.parametrize("attempts_left", [True, False])
def test_the_reconciler_counts_an_expired_lease_as_a_failed_attempt(platform, attempts_left):
    async def scenario(tasks, pool):
        task_id = await new_task(tasks, max_attempts=2 if attempts_left else 1)
        await tasks.claim(task_id, 30)
        await expire_lease(pool, task_id)
        requeued, dead = await tasks.expire_leases(limit=1000)
        state = await row(pool, task_id)
        assert state["attempts"] == 1 and "attempt 1 lost" in state["error"] and state["lease_token"] is None
        if attempts_left:
            assert task_id in requeued and state["status"] == "queued"
            claim, _ = await tasks.claim(task_id, 30)
            assert claim.attempts == 2
        else:
            assert task_id not in requeued and "checksum" in dead and state["status"] == "dead"
    run_with_store(platform, scenario)


def test_a_scheduled_task_is_not_claimed_before_it_is_due_and_queued_once_by_racing_workers(platform):
    async def scenario(tasks, pool):
        task, _ = await tasks.create(f"tenant-{uuid.uuid4().hex[:8]}", "checksum", {}, 3, None, delay_seconds=60)
        task_id = uuid.UUID(task["id"])
        assert task["status"] == "scheduled" and task["run_after"]
        assert await tasks.claim(task_id, 30) == (None, None)  # a stray message cannot run it early
        assert task_id not in await tasks.due_scheduled() + await tasks.take_overdue(0, 100, ["checksum"])
        await pool.execute("UPDATE tasks SET run_after = clock_timestamp() WHERE id = $1", task_id)  # its time comes
        racing = await asyncio.gather(*(tasks.due_scheduled() for _ in range(4)))
        assert sum(ids.count(task_id) for ids in racing) == 1
        claim, _ = await tasks.claim(task_id, 30)
        assert claim is not None and claim.attempts == 1
    run_with_store(platform, scenario)


async def finished_task(tasks: store.TaskStore, pool, tenant: str, kind: str, status: str, age_seconds: float) -> uuid.UUID:
    """A task of ``tenant`` that reached ``status`` ``age_seconds`` ago."""
    task, _ = await tasks.create(tenant, kind, {"seconds": 0} if kind == "sleep" else {}, 3, None)
    await pool.execute("UPDATE tasks SET status = $2, updated_at = clock_timestamp() - make_interval(secs => $3) "
                       "WHERE id = $1", uuid.UUID(task["id"]), status, age_seconds)
    return uuid.UUID(task["id"])


def test_retention_deletes_finished_tasks_past_their_tenants_else_kinds_else_default_period(platform):
    async def scenario(tasks, pool):
        usual, brief = f"tenant-{uuid.uuid4().hex[:8]}", f"tenant-{uuid.uuid4().hex[:8]}"
        expired = await finished_task(tasks, pool, usual, "checksum", "succeeded", 7200)  # default: 1 h
        recent = await finished_task(tasks, pool, usual, "checksum", "succeeded", 1800)
        long_kept_kind = await finished_task(tasks, pool, usual, "sleep", "dead", 7200)  # sleep: 1 day
        tenant_first = await finished_task(tasks, pool, brief, "sleep", "cancelled", 1200)  # brief: 10 min
        unfinished = await finished_task(tasks, pool, usual, "checksum", "queued", 7200)
        schedule = await ScheduleStore(pool).create(usual, "checksum", {}, None, None, 3600, "latest")
        await pool.execute("INSERT INTO schedule_occurrences (schedule_id, occurrence_at, task_id) "
                           "VALUES ($1, clock_timestamp(), $2)", uuid.UUID(schedule["id"]), expired)
        deleted = await tasks.delete_finished(3600, {"sleep": 86400}, {brief: 600}, limit=1000)
        assert sorted(deleted) == ["checksum", "sleep"]
        left = {r["id"] for r in await pool.fetch("SELECT id FROM tasks WHERE tenant = ANY($1::text[])", [usual, brief])}
        assert left == {recent, long_kept_kind, unfinished}
        assert await pool.fetchval("SELECT count(*) FROM schedule_occurrences WHERE task_id = $1", expired) == 0
        assert await tasks.delete_finished(None, {}, {}, limit=1000) == []  # no period: kept for ever
    run_with_store(platform, scenario)


def test_retention_works_in_batches_oldest_first(platform):
    async def scenario(tasks, pool):
        owner = f"tenant-{uuid.uuid4().hex[:8]}"
        by_age = [await finished_task(tasks, pool, owner, "checksum", "succeeded", age) for age in (900, 1000, 1100)]
        assert len(await tasks.delete_finished(None, {}, {owner: 600}, limit=2)) == 2
        assert [r["id"] for r in await pool.fetch("SELECT id FROM tasks WHERE tenant = $1", owner)] == by_age[:1]
    run_with_store(platform, scenario)


def test_a_retention_batch_in_progress_does_not_hold_off_creates(platform):
    async def scenario(tasks, pool):
        owner = f"tenant-{uuid.uuid4().hex[:8]}"
        for _ in range(3):
            await finished_task(tasks, pool, owner, "checksum", "succeeded", 7200)
        async with pool.acquire() as conn, conn.transaction():  # the batch's statement, not committed yet
            assert len(await store.TaskStore(conn).delete_finished(None, {}, {owner: 600}, limit=100)) == 3
            for key in (None, "a-new-key"):  # the same tenant, plain and idempotent
                task, created = await asyncio.wait_for(tasks.create(owner, "checksum", {}, 3, key), 2)
                assert created and task["status"] == "queued"
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant = $1", owner) == 2
    run_with_store(platform, scenario)


async def finished_delivery(pool, subscription_id: uuid.UUID, status: str, age_seconds: float,
                            event_id: uuid.UUID | None = None) -> uuid.UUID:
    """A delivery (with an attempt in its log) of a new event, or of ``event_id``, that reached
    ``status`` ``age_seconds`` ago."""
    if event_id is None:
        event_id = uuid.uuid4()
        await pool.execute("INSERT INTO webhook_events (id, tenant, type, task_id, task) "
                           "VALUES ($1, 't', 'task.succeeded', $2, '{}')", event_id, uuid.uuid4())
    delivery_id = uuid.uuid4()
    await pool.execute("INSERT INTO webhook_deliveries (id, subscription_id, event_id, status, updated_at) "
                       "VALUES ($1, $2, $3, $4, clock_timestamp() - make_interval(secs => $5))",
                       delivery_id, subscription_id, event_id, status, age_seconds)
    await pool.execute("INSERT INTO webhook_attempts (delivery_id, attempt, status_code, duration_ms) "
                       "VALUES ($1, 1, 200, 1)", delivery_id)
    return delivery_id


def test_delivery_log_retention_deletes_old_finished_deliveries_in_batches_oldest_first(platform):
    async def scenario(tasks, pool):
        webhooks = WebhookStore(pool)
        owner = f"tenant-{uuid.uuid4().hex[:8]}"
        hook, other = [uuid.UUID((await webhooks.create(owner, "https://example.com/", ["task.succeeded"], "",
                                                        "whsec_x"))["id"]) for _ in range(2)]
        oldest = await finished_delivery(pool, hook, "failed", 7400)
        old = [await finished_delivery(pool, hook, status, age) for status, age in (("succeeded", 7300),
                                                                                    ("succeeded", 7200))]
        shared_event = await pool.fetchval("SELECT event_id FROM webhook_deliveries WHERE id = $1", old[1])
        sibling = await finished_delivery(pool, other, "succeeded", 60, shared_event)  # same event, recent
        recent = await finished_delivery(pool, hook, "succeeded", 60)
        pending = await finished_delivery(pool, hook, "pending", 7500)
        # Every database of the test session shares the table: only this subscription's rows count.
        ours = "SELECT array_agg(id) FROM webhook_deliveries WHERE subscription_id = ANY($1::uuid[])"

        assert await webhooks.delete_finished(3600, limit=2) >= 2
        left = set(await pool.fetchval(ours, [hook, other]))
        assert oldest not in left and old[0] not in left, "oldest first"
        while await webhooks.delete_finished(3600, limit=2):
            pass
        assert set(await pool.fetchval(ours, [hook, other])) == {sibling, recent, pending}
        assert await pool.fetchval("SELECT count(*) FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[])",
                                   [oldest, *old]) == 0
        events = await pool.fetch("SELECT id FROM webhook_events WHERE id IN (SELECT event_id FROM webhook_deliveries "
                                  "WHERE subscription_id = ANY($1::uuid[]))", [hook, other])
        assert shared_event in {r["id"] for r in events}, "an event a delivery still needs stays"
        assert await pool.fetchval("SELECT count(*) FROM webhook_events e WHERE NOT EXISTS (SELECT 1 FROM "
                                   "webhook_deliveries d WHERE d.event_id = e.id) AND e.tenant = 't'") == 0, \
            "the events of the deleted deliveries are gone"
    run_with_store(platform, scenario)


# The claim of the release before migration 0010 (its webhook_store.claim_due), which may run
# beside this one during a blue/green switch.
CLAIM_BEFORE_0010 = (
    "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' "
    "  AND next_attempt_at <= clock_timestamp() AND (lease_until IS NULL OR lease_until < clock_timestamp()) "
    "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), "
    "claimed AS (UPDATE webhook_deliveries d SET attempts = d.attempts + 1, lease_token = gen_random_uuid(), "
    "  lease_until = clock_timestamp() + make_interval(secs => $2), updated_at = clock_timestamp() "
    "  FROM due WHERE d.id = due.id RETURNING d.*) "
    "SELECT c.id FROM claimed c JOIN webhook_subscriptions s ON s.id = c.subscription_id")


def test_a_callback_delivery_is_written_with_the_status_change_and_never_taken_by_the_release_before(platform):
    """A task with a callback_url: its terminal status change writes the callback's delivery (the
    trigger of migration 0010), which the claim of a release before it leaves alone (it could not
    send it and would count an attempt); this release's claims it, with the tenant's callback
    secrets, and gives it back unheld after a failed attempt."""
    async def scenario(tasks, pool):
        owner = f"tenant-{uuid.uuid4().hex[:8]}"
        webhooks = WebhookStore(pool)
        await webhooks.set_callback_secret(owner, "whsec_old", 0)
        await webhooks.set_callback_secret(owner, "whsec_new", 600)
        task, _ = await tasks.create(owner, "checksum", {}, 3, None, callback_url="https://example.com/cb")
        claim, _ = await tasks.claim(uuid.UUID(task["id"]), 30)
        assert await tasks.complete(claim, {"ok": True})
        delivery = await pool.fetchrow("SELECT *, lease_until = 'infinity' AS unheld FROM webhook_deliveries "
                                       "WHERE tenant = $1", owner)
        assert delivery["subscription_id"] is None and delivery["callback_url"] == "https://example.com/cb"
        assert delivery["unheld"] and delivery["lease_token"] is None
        assert [r for r in await pool.fetch(CLAIM_BEFORE_0010, 1000, 30) if r["id"] == delivery["id"]] == []
        assert await pool.fetchval("SELECT attempts FROM webhook_deliveries WHERE id = $1", delivery["id"]) == 0

        claimed = [c for c in await webhooks.claim_due(1000, 30) if c.id == delivery["id"]]
        assert len(claimed) == 1 and claimed[0].url == "https://example.com/cb"
        assert claimed[0].secrets == ["whsec_new", "whsec_old"] and claimed[0].task["status"] == "succeeded"
        assert await webhooks.record(claimed[0], 500, "HTTP 500", 1.0, "pending", 0)
        assert [r for r in await pool.fetch(CLAIM_BEFORE_0010, 1000, 30) if r["id"] == delivery["id"]] == []
    run_with_store(platform, scenario)


def test_one_statement_claims_several_tasks_each_with_its_own_lease_token(platform):
    """``claim_many``, as the worker's batched claims use it: each task claimed once however
    often it is named, each with a token of its own; one out of attempts turns dead; one already
    running under a live lease, or of a kind not runnable, is left as it is."""
    async def scenario(tasks, pool):
        fresh = [await new_task(tasks) for _ in range(3)]
        spent = await new_task(tasks, max_attempts=1)
        await tasks.claim(spent, 30)
        await expire_lease(pool, spent)  # its only attempt lost with its worker
        held = await new_task(tasks)
        holder, _ = await tasks.claim(held, 30)
        outcomes = await tasks.claim_many([*fresh, fresh[0], spent, held], 30)
        claims = [outcomes[task_id][0] for task_id in fresh]
        assert all(c is not None and c.attempts == 1 for c in claims), outcomes
        assert len({c.lease_token for c in claims}) == 3
        assert outcomes[spent] == (None, "checksum")
        assert outcomes[held] == (None, None)
        assert (await row(pool, held))["lease_token"] == holder.lease_token
        other_kind = await new_task(tasks)
        assert await tasks.claim_many([other_kind], 30, ["sleep"]) == {other_kind: (None, None)}
        assert (await row(pool, other_kind))["status"] == "queued"
        assert list((await tasks.claim_many([fresh[1]], 30)).values()) == [(None, None)]  # running, live lease
    run_with_store(platform, scenario)


def test_one_statement_completes_only_the_attempts_whose_token_is_still_held(platform):
    """``complete_many``: a batch of successes in one commit; an attempt whose lease was lost
    and taken by another holder records nothing, the others are recorded with their results."""
    async def scenario(tasks, pool):
        ids = [await new_task(tasks) for _ in range(3)]
        claims = [(await tasks.claim(task_id, 30))[0] for task_id in ids]
        await expire_lease(pool, ids[2])
        next_holder, _ = await tasks.claim(ids[2], 30)
        done = await tasks.complete_many([(claim, {"n": n, "text": "naïve \\u00e9"}) for n, claim in enumerate(claims)])
        assert done == set(ids[:2])
        for n, task_id in enumerate(ids[:2]):
            stored = await pool.fetchrow("SELECT status, result, lease_token FROM tasks WHERE id = $1", task_id)
            assert (stored["status"], stored["result"], stored["lease_token"]) == (
                "succeeded", {"n": n, "text": "naïve \\u00e9"}, None)
        assert (await row(pool, ids[2]))["lease_token"] == next_holder.lease_token
        assert await tasks.complete_many([(claims[0], {"again": True})]) == set()  # a duplicate: no-op
    run_with_store(platform, scenario)


def test_a_connection_given_back_to_the_pool_is_not_reset(platform):
    """``store.keep_session``: the statement a pool connection ran last is the platform's own,
    not asyncpg's reset query (a round trip per statement, for state the platform never sets)."""
    async def scenario(tasks, pool):
        pids = {await pool.fetchval("SELECT pg_backend_pid()") for _ in range(4)}
        pg = platform.pg
        with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password,
                             dbname=pg.database) as other:
            last = [q for (q,) in other.execute("SELECT query FROM pg_stat_activity WHERE pid = ANY(%s)",
                                                (list(pids),)).fetchall()]
        assert last and all(q == "SELECT pg_backend_pid()" for q in last), last
    run_with_store(platform, scenario)


def creates_of(tenant: str, *tasks: tuple[dict, str | None]) -> list[store.Create]:
    return [store.Create(tenant, store.NewTask("checksum", payload, key), 3) for payload, key in tasks]


def test_creates_committed_together_each_get_their_own_row_and_answer(platform):
    """``create_many`` (the API's group commit): one statement for several requests, each told
    its own task, in the requests' order, as the rows PostgreSQL holds."""
    async def scenario(tasks, pool):
        tenant, other = f"tenant-{uuid.uuid4().hex[:8]}", f"tenant-{uuid.uuid4().hex[:8]}"
        batch = creates_of(tenant, ({"n": 1}, None), ({"n": 2}, "k-1"), ({"n": 3}, None)) + creates_of(other, ({}, "k-1"))
        answers = await tasks.create_many(batch)
        assert [created for _, created in answers] == [True, True, True, True]
        rows = {str(r["id"]): dict(r) for r in await pool.fetch(
            "SELECT id, tenant, payload, idempotency_key, status FROM tasks WHERE tenant = ANY($1)", [tenant, other])}
        assert len(rows) == 4
        for create, (task, _) in zip(batch, answers):
            stored = rows[task["id"]]
            assert (stored["tenant"], stored["payload"], stored["idempotency_key"], stored["status"]) == (
                create.tenant, create.task.payload, create.task.idempotency_key, "queued")
            assert (task["tenant"], task["payload"]) == (create.tenant, create.task.payload)
    run_with_store(platform, scenario)


def test_one_key_twice_in_one_statement_is_a_create_then_its_replay_or_a_refusal(platform):
    """Two requests with the same (tenant, key) committed together answer as if one came after
    the other: the second is the first's replay (the same body) or refused (another body)."""
    async def scenario(tasks, pool):
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        earlier, _ = await tasks.create(tenant, "checksum", {"n": 0}, 3, "before")
        answers = await tasks.create_many(creates_of(
            tenant, ({"n": 1}, "same"), ({"n": 1.0}, "same"), ({"n": 2}, "same"), ({"n": 0}, "before"),
            ({"n": 9}, "before")))
        first, replay, refused, earlier_replay, earlier_refused = answers
        assert first[1] is True and replay == (first[0], False)
        assert isinstance(refused, store.IdempotencyKeyReused) and refused.key == "same"
        assert earlier_replay == (earlier, False)
        assert isinstance(earlier_refused, store.IdempotencyKeyReused) and earlier_refused.key == "before"
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant = $1", tenant) == 2
    run_with_store(platform, scenario)


def test_a_row_postgresql_refuses_fails_only_its_own_request(platform):
    """A payload jsonb cannot hold (a NUL: the API refuses it before, 422; here the store is
    called directly) fails the statement; each request goes again alone, so the others are
    created and only that one gets the error — never half of a statement's rows."""
    async def scenario(tasks, pool):
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        answers = await tasks.create_many(creates_of(tenant, ({"n": 1}, None), ({"text": "a\u0000b"}, None),
                                                     ({"n": 3}, "k")))
        assert answers[0][1] is True and answers[2][1] is True
        assert isinstance(answers[1], asyncpg.PostgresError)
        assert sorted(r["payload"]["n"] for r in await pool.fetch("SELECT payload FROM tasks WHERE tenant = $1",
                                                                  tenant)) == [1, 3]
    run_with_store(platform, scenario)
