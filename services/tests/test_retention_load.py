"""The tasks table stays flat under a steady load with retention: tasks created at a steady rate
through the real API, run by two real workers, and deleted by the retention statement the
workers run (``TaskStore.delete_finished``, its batch of 500, at the tests' maintenance interval)
with a 5-second period; the live rows and the table's size (heap, indexes, TOAST) sampled every
second. A platform of its own: the session's other tests' rows would blur what is measured.

Why the test runs the retention statement itself: the runtime config's shortest period is a
minute (``RetentionSeconds``: a client polling for the outcome must see it), and a test that waits
for minutes of steady state is not one that runs every time. The statement, its batch and its
cadence are the workers'; only the period is shorter. PostgreSQL's autovacuum wakes every 5 s
here (``autovacuum_naptime``, 60 s by default) for the same reason: the test compresses time. What
it shows is that the table reaches a steady state — deleted rows' space is reused — and how big
it is for this rate and period; with the defaults the steady state is larger (about a minute of
dead rows more), not growing.

Run with ``-s`` to see the figures (docs/task-platform.md, "Retention under a steady load").
"""

from __future__ import annotations

import asyncio
import threading
import time

import asyncpg
import psycopg
import pytest
import requests

from conftest import wait_worker_ready
from taskplatform.store import TaskStore
from taskplatform_testing.servers import start_platform

RATE = 50  # tasks created per second
RETENTION_SECONDS = 5.0
WARM_UP_SECONDS = 20  # retention's first deletes come after 5 s; autovacuum's first passes after
MEASURE_SECONDS = 30
PASS_SECONDS = 0.3  # the tests' TASKS_MAINTENANCE_INTERVAL_SECONDS


@pytest.fixture(scope="module")
def loaded():
    """(platform, API URL) with two workers; autovacuum waking every 5 s."""
    started = start_platform()
    try:
        url = started.start_api(processes=1)
        for worker in [started.start_worker() for _ in range(2)]:
            wait_worker_ready(worker)
        yield started, url
    finally:
        started.stop()


def admin(platform) -> psycopg.Connection:
    """The platform's database as its owner (a superuser: initdb's), outside a transaction
    (ALTER SYSTEM cannot run in one)."""
    pg = platform.pg
    return psycopg.connect(host="127.0.0.1", port=pg.port, dbname=pg.database, user=pg.user, password=pg.password,
                           autocommit=True)


class Retention(threading.Thread):
    """The workers' retention pass with a short period, and a sample of the table every second:
    (seconds since start, live rows, dead rows, total relation size in bytes)."""

    def __init__(self, platform):
        super().__init__(daemon=True)
        self.platform, self.stop = platform, threading.Event()
        self.samples: list[tuple[float, int, int, int]] = []
        self.deleted = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.error = exc

    async def _main(self) -> None:
        pg = self.platform.pg
        pool = await asyncpg.create_pool(host="127.0.0.1", port=pg.port, database=pg.database, user=pg.user,
                                         password=pg.password, min_size=1, max_size=2)
        store, start, sampled = TaskStore(pool), time.monotonic(), 0.0
        try:
            while not self.stop.is_set():
                self.deleted += len(await store.delete_finished(RETENTION_SECONDS, {}, {}))
                now = time.monotonic() - start
                if now - sampled >= 1.0:
                    sampled = now
                    row = await pool.fetchrow(
                        "SELECT (SELECT count(*) FROM tasks) AS live, pg_total_relation_size('tasks') AS size, "
                        "coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'tasks'), 0) AS dead")
                    self.samples.append((now, row["live"], row["dead"], row["size"]))
                await asyncio.sleep(PASS_SECONDS)
        finally:
            await pool.close()


def test_the_tasks_table_stays_flat_under_a_steady_load_with_retention(loaded):
    platform, url = loaded
    with admin(platform) as conn:
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = '5s'")
        conn.execute("SELECT pg_reload_conf()")
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {platform.token('tenant-flat')}"
    retention = Retention(platform)
    retention.start()
    batch = [{"kind": "checksum", "payload": {"n": n}} for n in range(RATE // 10)]
    start = time.monotonic()
    created = 0
    try:
        # A batch of a tenth of a second's tasks every tenth of a second, on a fixed timetable.
        while (elapsed := time.monotonic() - start) < WARM_UP_SECONDS + MEASURE_SECONDS:
            answer = session.post(f"{url}/v1/tasks:batch", json={"tasks": batch}, timeout=10)
            assert answer.status_code == 202, answer.text
            created += len(batch)
            time.sleep(max(0.0, created / RATE - (time.monotonic() - start)))  # the timetable, not a condition
    finally:
        retention.stop.set()
        retention.join(30)
    assert retention.error is None, repr(retention.error)
    with admin(platform) as conn:
        conn.execute("ALTER SYSTEM RESET autovacuum_naptime")
        conn.execute("SELECT pg_reload_conf()")
        vacuums = conn.execute("SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'tasks'").fetchone()[0]

    warm = [s for s in retention.samples if s[0] < WARM_UP_SECONDS]
    steady = [s for s in retention.samples if s[0] >= WARM_UP_SECONDS]
    at_warm_up = warm[-1][3]
    largest = max(s[3] for s in steady)
    most_live = max(s[1] for s in steady)
    half = len(steady) // 2
    first_half, second_half = max(s[3] for s in steady[:half]), max(s[3] for s in steady[half:])
    print(f"\n{created} tasks at {RATE}/s over {elapsed:.0f} s, retention {RETENTION_SECONDS:g} s, "
          f"{retention.deleted} deleted, autovacuum of tasks {vacuums} times")
    print(f"live rows after warm-up: {min(s[1] for s in steady)}–{most_live}; dead rows at most "
          f"{max(s[2] for s in steady)}")
    print(f"tasks total relation size: {at_warm_up / 1024:.0f} KiB at {WARM_UP_SECONDS} s, largest after "
          f"{largest / 1024:.0f} KiB (first half {first_half / 1024:.0f}, second half {second_half / 1024:.0f}); "
          f"all tasks ever created would be about {at_warm_up / max(1, warm[-1][1]) * created / 1024:.0f} KiB")
    for second, live, dead, size in retention.samples[::5]:
        print(f"  {second:5.1f} s  live {live:5d}  dead {dead:6d}  size {size / 1024:7.0f} KiB")
    # Live rows: what the last period made, plus the pass and the workers' lag (3 s is generous).
    assert most_live <= RATE * (RETENTION_SECONDS + 3), f"{most_live} live rows: retention does not keep up"
    assert retention.deleted >= created - RATE * (RETENTION_SECONDS + 3)
    # Size: flat once warm — the second half of the steady state no larger than the first by
    # more than a quarter (dead rows come and go between autovacuum's passes); growing with the
    # tasks made would be a third larger in the second half (30 s more of 50 s' tasks).
    assert second_half <= first_half * 1.25, f"the table grew: {first_half} → {second_half} bytes"
    assert largest <= at_warm_up * 1.5, f"the table grew: {at_warm_up} bytes when warm, {largest} later"
