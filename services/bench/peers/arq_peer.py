"""arq: asyncio jobs over Redis, results in Redis. Its reliability is built in and on by
default: a job stays in the queue until it ended, and a worker that starts it holds an
"in-progress" key that expires ``job_timeout`` + 10 s later, so a job whose worker was killed is
run again by another one then (``max_tries`` 5 counts those runs). ``job_timeout`` is set to a
few seconds, above the longest task the bench runs (the default, 300 s, would hold a killed
worker's job for 310 s). arq polls its queue every ``poll_delay`` (default 0.5 s, half of
which an enqueue waits on average): set to 10 ms, since the bench measures latency.

Environment: PEER_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os

from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import default_queue_name, result_key_prefix
from arq.jobs import deserialize_result
from arq.worker import func, run_worker

from peers import workload
from peers.outcomes import with_pending

JOB_TIMEOUT_S = 3
POLL_DELAY_S = 0.01
SETTINGS = (f"job_timeout {JOB_TIMEOUT_S} s (a killed worker's job runs again {JOB_TIMEOUT_S + 10} s after it "
            f"started), max_tries 5 (default), poll_delay {POLL_DELAY_S * 1000:.0f} ms (default 500), "
            "max_jobs 10 (default); results in Redis")


async def checksum(ctx, payload: dict) -> dict:
    return workload.checksum(payload)


async def slow(ctx, index: int, seconds: float, marker_file: str) -> dict:
    return await asyncio.to_thread(workload.slow, index, seconds, marker_file)  # blocking: off the event loop


class WorkerSettings:
    functions = [func(checksum, name="checksum"), func(slow, name="slow")]
    job_timeout = JOB_TIMEOUT_S
    poll_delay = POLL_DELAY_S


class Adapter:
    def __init__(self):
        self.redis_settings = RedisSettings.from_dsn(os.environ["PEER_REDIS_URL"])
        self.loop = asyncio.new_event_loop()  # one loop for all calls: the pool's connections live on it
        self.pool = None

    def _run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def prepare(self) -> dict:
        return {"settings": SETTINGS, "versions": {name: importlib.metadata.version(name) for name in ("arq", "redis")}}

    def run_worker(self, name: str) -> None:
        asyncio.set_event_loop(self.loop)
        run_worker(WorkerSettings, redis_settings=self.redis_settings)

    def connect(self) -> None:
        if self.pool is None:
            self.pool = self._run(create_pool(self.redis_settings))

    def submit(self, index: int) -> str:
        return self._run(self.pool.enqueue_job("checksum", {"n": index})).job_id

    def submit_slow(self, index: int, seconds: float, marker_file: str) -> str:
        return self._run(self.pool.enqueue_job("slow", index, seconds, marker_file)).job_id

    def count_done(self, expected: int) -> int:
        # A job leaves the queue (a sorted set) in the transaction that stores its result.
        self.connect()
        return expected - self._run(self.pool.zcard(default_queue_name))

    def _results(self, keys: list[bytes]) -> list:
        values = self._run(self.pool.mget(*keys)) if keys else []
        return [deserialize_result(v) for v in values if v is not None]

    def done_span(self) -> tuple[float | None, float | None]:
        self.connect()
        keys = self._run(self._scan(result_key_prefix + "*"))
        finished = [r.finish_time.timestamp() for r in self._results(keys) if r.function == "checksum" and r.success]
        return (min(finished), max(finished)) if finished else (None, None)

    async def _scan(self, pattern: str) -> list[bytes]:
        return [key async for key in self.pool.scan_iter(match=pattern, count=1000)]

    def outcomes(self, ids: list[str]) -> dict[str, dict]:
        self.connect()
        results = {r.job_id: r for r in self._results([result_key_prefix + i for i in ids])}
        found = {job_id: {"state": "succeeded" if r.success else "failed", "done_at": r.finish_time.timestamp(),
                          "runs": None} for job_id, r in results.items()}
        return with_pending(ids, found)
