"""A task body that swallows its cancellation (a timeout, a shutdown past the grace period) and
returns anyway: the worker in-process against the real PostgreSQL and Redis, with such a body
swapped in. Nothing that body returns is ever recorded — not on its own attempt, not on the
next holder's."""

import asyncio
import json
import uuid

from taskplatform import kinds, queue, store
from taskplatform.runtime_config import FileConfigSource
from taskplatform.secrets import FileSecretSource
from taskplatform.settings import ProcessSettings
from taskplatform.worker import Worker
from taskplatform_testing.servers import RUNTIME_DEFAULTS


class StubbornBody:
    """Attempt 1 ignores cancellation, then waits for ``release`` and returns a result."""

    def __init__(self):
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.returned = asyncio.Event()

    async def __call__(self, kind, payload, context):
        if context.attempt > 1:
            return {"attempt": context.attempt}
        try:
            await asyncio.Event().wait()  # hangs
        except asyncio.CancelledError:
            self.cancelled.set()  # ...and swallows it
        await self.release.wait()
        self.returned.set()
        return {"from": "the cancelled attempt"}


def run_worker_scenario(platform, tmp_path, monkeypatch, scenario, **config):
    config_file = tmp_path / "runtime.json"
    config_file.write_text(json.dumps(dict(RUNTIME_DEFAULTS, **config)))
    settings = ProcessSettings(pg_host="127.0.0.1", pg_port=platform.pg.port, pg_database=platform.pg.database,
                               pg_user=platform.pg.user, redis_host="127.0.0.1", redis_port=platform.redis.port,
                               secrets_dir=str(platform.secrets_dir), config_file=str(config_file),
                               heartbeat_file=str(tmp_path / "heartbeat"), lease_seconds=30,
                               shutdown_grace_seconds=0.2)
    source = FileConfigSource(config_file)
    source.load_initial()
    body = StubbornBody()
    monkeypatch.setattr(kinds.Runner, "run", body)

    async def main():
        secrets = FileSecretSource(settings.secrets_dir)
        worker = Worker(settings, secrets, source)
        pool = await store.create_pool([("127.0.0.1", platform.pg.port)], platform.pg.database, platform.pg.user,
                                       secrets.get("postgres_password"), size=4)
        worker.store = store.TaskStore(pool)
        worker.use_redis(queue.connect("127.0.0.1", platform.redis.port, secrets.get("redis_password")))
        try:
            task, _ = await worker.store.create(f"tenant-{uuid.uuid4().hex[:8]}", "sleep", {"seconds": 1}, 3, None)
            await asyncio.wait_for(scenario(worker, body, uuid.UUID(task["id"]), pool), 30)
        finally:
            await worker.redis.aclose()
            await pool.close()
    asyncio.run(main())


async def row(pool, task_id):
    return dict(await pool.fetchrow("SELECT status, attempts, result, error, lease_token FROM tasks WHERE id = $1",
                                    task_id))


def test_a_timed_out_body_that_returns_anyway_is_still_a_timeout(platform, tmp_path, monkeypatch):
    async def scenario(worker, body, task_id, pool):
        processing = asyncio.create_task(worker._process(queue.Message(queue.STREAM, "0-1"), str(task_id)))
        await body.cancelled.wait()  # the timeout fired
        body.release.set()  # the body returns its result right after swallowing the cancellation
        await processing
        await body.returned.wait()
        state = await row(pool, task_id)
        assert state["status"] == "retry_wait" and state["result"] is None, state
        assert state["error"].startswith("TimeoutError: attempt 1 ran longer than 0.3 s"), state
    run_worker_scenario(platform, tmp_path, monkeypatch, scenario, task_timeout_seconds_by_kind={"sleep": 0.3})


def test_a_handed_back_body_that_returns_later_cannot_complete_the_next_holders_attempt(platform, tmp_path,
                                                                                         monkeypatch):
    async def scenario(worker, body, task_id, pool):
        worker._spawn(queue.Message(queue.STREAM, "0-1"), str(task_id))
        processing = list(worker.inflight)
        while (await row(pool, task_id))["status"] != "running":
            await asyncio.sleep(0.01)
        await worker._shutdown()  # past the grace period: cancelled (and swallowed), handed back
        assert body.cancelled.is_set()
        handed_back = await row(pool, task_id)
        assert handed_back["status"] == "queued" and handed_back["attempts"] == 0, handed_back
        next_holder, _ = await worker.store.claim(task_id, 30)
        assert next_holder.attempts == 1  # the same attempt number as the cancelled one
        body.release.set()
        await body.returned.wait()
        await asyncio.gather(*processing, return_exceptions=True)
        state = await row(pool, task_id)
        assert state["status"] == "running" and state["result"] is None, state
        assert state["lease_token"] == next_holder.lease_token
        assert await worker.store.complete(next_holder, {"from": "the next holder"})
    run_worker_scenario(platform, tmp_path, monkeypatch, scenario)
