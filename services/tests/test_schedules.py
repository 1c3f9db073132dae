"""Firing schedules against the real PostgreSQL: each occurrence makes exactly one task, with
firers racing for the same schedules, with a firer holding a schedule, with an occurrence already
recorded, and with a real worker killed -9 in the middle of firing one. Missed occurrences after
an outage follow the schedule's catch-up policy. A PostgreSQL and Redis of their own: the
session's workers must not fire these schedules."""

import asyncio
import os
import signal
import time
import uuid

import pytest

from conftest import wait_worker_ready
from taskplatform import store
from taskplatform.schedules import ScheduleStore
from taskplatform_testing.servers import start_platform


@pytest.fixture(scope="module")
def own():
    started = start_platform()
    yield started
    started.stop()


async def open_pool(platform, size: int = 2):
    return await store.create_pool([("127.0.0.1", platform.pg.port)], platform.pg.database, platform.pg.user,
                                   platform.pg.password, size=size)


def run(platform, scenario):
    async def main():
        pool = await open_pool(platform, size=4)
        try:
            await scenario(ScheduleStore(pool), pool)
        finally:
            await pool.close()
    asyncio.run(main())


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


async def backdate(pool, schedule_ids, seconds: float) -> None:
    """As if the schedules had been created ``seconds`` earlier and no firer had run since."""
    await pool.execute("UPDATE schedules SET created_at = created_at - make_interval(secs => $2), "
                       "next_run_at = next_run_at - make_interval(secs => $2) WHERE id = ANY($1::uuid[])",
                       list(schedule_ids), seconds)


async def occurrences(pool, schedule_id) -> list:
    return await pool.fetch("SELECT o.occurrence_at, o.task_id, t.kind, t.status FROM schedule_occurrences o "
                            "JOIN tasks t ON t.id = o.task_id WHERE o.schedule_id = $1 ORDER BY o.occurrence_at",
                            uuid.UUID(str(schedule_id)))


def test_racing_firers_fire_each_occurrence_of_each_schedule_once(own):
    async def fire_until_idle(firer: ScheduleStore) -> list:
        fired = []
        while (firing := await firer.fire_due(max_attempts=3, limit=2)).task_ids:
            fired += firing.task_ids
        return fired

    async def scenario(schedules, pool):
        owner = tenant()
        ids = [(await schedules.create(owner, "checksum", {"n": n}, None, None, 1, "all"))["id"] for n in range(12)]
        await backdate(pool, ids, 40)  # 40 occurrences of each due, 480 in all
        pools = [await open_pool(own, size=1) for _ in range(6)]
        try:
            fired = await asyncio.gather(*(fire_until_idle(ScheduleStore(p)) for p in pools))
        finally:
            for p in pools:
                await p.close()
        await pool.execute("UPDATE schedules SET paused = true WHERE id = ANY($1::uuid[])", ids)
        all_fired = [task_id for each in fired for task_id in each]
        assert len(all_fired) == len(set(all_fired)) >= 12 * 40
        assert sum(1 for each in fired if each) >= 2, "the firers did not race"
        total = 0
        for schedule_id in ids:
            rows = await occurrences(pool, schedule_id)
            created = await pool.fetchval("SELECT created_at FROM schedules WHERE id = $1", uuid.UUID(schedule_id))
            # one occurrence every second from the (backdated) creation, none missing, none twice
            assert [(r["occurrence_at"] - created).total_seconds() for r in rows] == list(range(1, len(rows) + 1))
            assert len(rows) >= 40
            total += len(rows)
        assert total == len(all_fired)
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant = $1", owner) == total
    run(own, scenario)


def test_a_schedule_held_by_a_firer_is_skipped_not_waited_for(own):
    async def scenario(schedules, pool):
        held = await schedules.create(tenant(), "checksum", {}, None, None, 60, "latest")
        await backdate(pool, [held["id"]], 61)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT 1 FROM schedules WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(held["id"]))
            started = time.monotonic()
            firing = await asyncio.wait_for(schedules.fire_due(max_attempts=3), 5)
            assert time.monotonic() - started < 2 and firing.task_ids == []
        assert len((await schedules.fire_due(max_attempts=3)).task_ids) == 1  # released: fired now
    run(own, scenario)


def test_an_occurrence_already_recorded_makes_no_second_task(own):
    async def scenario(schedules, pool):
        schedule = await schedules.create(tenant(), "checksum", {}, None, None, 60, "latest")
        await backdate(pool, [schedule["id"]], 61)
        first = await schedules.fire_due(max_attempts=3)
        assert len(first.task_ids) == 1
        # next_run_at set back onto the occurrence just fired (as a clock or code fault would)
        await pool.execute("UPDATE schedules SET next_run_at = (SELECT occurrence_at FROM schedule_occurrences "
                           "WHERE schedule_id = $1) WHERE id = $1", uuid.UUID(schedule["id"]))
        again = await schedules.fire_due(max_attempts=3)
        assert again.task_ids == [] and len(await occurrences(pool, schedule["id"])) == 1
        row = await pool.fetchrow("SELECT next_run_at, clock_timestamp() AS now FROM schedules WHERE id = $1",
                                  uuid.UUID(schedule["id"]))
        assert row["next_run_at"] > row["now"]  # moved on all the same
    run(own, scenario)


@pytest.mark.parametrize("policy, fired", [("latest", 1), ("all", 4), ("none", 0)])
def test_missed_occurrences_after_an_outage_follow_the_catchup_policy(own, policy, fired):
    async def scenario(schedules, pool):
        schedule = await schedules.create(tenant(), "checksum", {}, None, None, 300, policy)
        await backdate(pool, [schedule["id"]], 1290)  # four occurrences missed, the latest 90 s ago
        firing = await schedules.fire_due(max_attempts=3)
        rows = await occurrences(pool, schedule["id"])
        assert len(firing.task_ids) == len(rows) == fired
        assert firing.skipped == ({policy: 4 - fired} if fired < 4 else {})
        assert all(r["status"] == "queued" for r in rows)
        if policy == "latest":
            created = await pool.fetchval("SELECT created_at FROM schedules WHERE id = $1", uuid.UUID(schedule["id"]))
            assert (rows[0]["occurrence_at"] - created).total_seconds() == 1200
        later = await schedules.get(await pool.fetchval("SELECT tenant FROM schedules WHERE id = $1",
                                                        uuid.UUID(schedule["id"])), uuid.UUID(schedule["id"]))
        assert later["last_fired_at"] == (rows[-1]["occurrence_at"].isoformat() if rows else None)
        assert (await schedules.fire_due(max_attempts=3)).task_ids == []  # nothing due until the next one
    run(own, scenario)


def test_a_paused_schedule_does_not_fire_and_resumes_from_the_next_occurrence(own):
    async def scenario(schedules, pool):
        owner = tenant()
        schedule = await schedules.create(owner, "checksum", {}, None, None, 60, "all")
        schedule_id = uuid.UUID(schedule["id"])
        assert (await schedules.set_paused(owner, schedule_id, True))["paused"] is True
        await backdate(pool, [schedule_id], 185)
        assert (await schedules.fire_due(max_attempts=3)).task_ids == []
        resumed = await schedules.set_paused(owner, schedule_id, False)
        now = await pool.fetchval("SELECT clock_timestamp()")
        assert resumed["paused"] is False and resumed["next_run_at"] > now.isoformat()  # paused ones are not fired
        assert (await schedules.fire_due(max_attempts=3)).task_ids == []
        assert await schedules.set_paused("someone-else", schedule_id, True) is None
    run(own, scenario)


def test_a_worker_killed_while_firing_commits_nothing_and_the_occurrence_fires_once(own):
    """The worker's firing transaction is held at its insert of the occurrence (this test's own
    transaction has inserted the same one and not committed, as a racing firer would have), then
    killed -9. Neither commits; another worker then fires the occurrence, once."""
    async def scenario(schedules, pool):
        owner = tenant()
        schedule = await schedules.create(owner, "checksum", {"from": "schedule"}, None, None, 3600, "latest")
        schedule_id = uuid.UUID(schedule["id"])
        occurrence = await pool.fetchval("SELECT date_trunc('second', clock_timestamp()) - interval '5 s'")
        async with pool.acquire() as racing:  # a firer that recorded the occurrence, not committed yet
            racing_tx = racing.transaction()
            await racing_tx.start()
            try:
                await racing.execute("INSERT INTO schedule_occurrences (schedule_id, occurrence_at, task_id) "
                                     "VALUES ($1, $2, gen_random_uuid())", schedule_id, occurrence)
                await pool.execute("UPDATE schedules SET created_at = $2::timestamptz - interval '3600 s', "
                                   "next_run_at = $2 WHERE id = $1", schedule_id, occurrence)
                worker = own.start_worker()
                firing_backend = await wait_for_value(lambda: pool.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%schedule_occurrences%' AND pid <> pg_backend_pid()"), 30, "the worker firing")
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            finally:
                await racing_tx.rollback()
        await wait_for_value(lambda: pool.fetchval("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                                                   firing_backend), 10, "end of the killed worker's backend")
        assert await occurrences(pool, schedule_id) == []
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant = $1", owner) == 0
        assert await pool.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", schedule_id) == occurrence
        survivor = own.start_worker()
        try:
            wait_worker_ready(survivor)
            await wait_for_value(lambda: pool.fetchval(
                "SELECT t.status = 'succeeded' FROM schedule_occurrences o JOIN tasks t ON t.id = o.task_id "
                "WHERE o.schedule_id = $1", schedule_id), 30, "the occurrence's task done")
        finally:
            own.stop_workers()
        rows = await occurrences(pool, schedule_id)
        assert [r["occurrence_at"] for r in rows] == [occurrence]
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE tenant = $1", owner) == 1
        assert (await pool.fetchval("SELECT next_run_at FROM schedules WHERE id = $1", schedule_id)
                - occurrence).total_seconds() == 3600
    run(own, scenario)


async def wait_for_value(ask, timeout: float, what: str):
    """The first truthy answer of ``ask`` (a coroutine function), asked until ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await ask():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s")
