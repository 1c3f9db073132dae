"""RQ: jobs over Redis, results in Redis, run by its default ``Worker``, which forks a
work-horse process for every job (a job that crashes takes its horse, not the worker, with it).
What RQ does with a job whose worker died: the job stays in the started registry until its
heartbeat runs out (``job_monitoring_interval`` + 60 s: never sooner than a minute; 30 + 60 by
default, 5 + 60 here), then a worker's maintenance pass finds it abandoned and re-enqueues it if
it has retries left (``Retry(max=3)`` on every enqueue), else marks it failed. A worker runs that
pass every ``maintenance_interval`` (10 min by default, 5 s here), but an idle one only when its
wait for a job times out (``worker_ttl`` - 15 s: 405 s by default; ``worker_ttl`` 20 here).
Results are kept an hour (``result_ttl``; 500 s by default), longer than a run.

Environment: PEER_REDIS_URL.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os

from redis import Redis
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus

from peers import workload
from peers.outcomes import with_pending

MAINTENANCE_INTERVAL_S = 5
WORKER_TTL_S = 20
JOB_MONITORING_INTERVAL_S = 5
RESULT_TTL_S = 3600
SETTINGS = (f"Worker (a forked work-horse per job, the default), Retry(max=3) on enqueue, maintenance_interval "
            f"{MAINTENANCE_INTERVAL_S} s (default 600), worker_ttl {WORKER_TTL_S} s (default 420), "
            f"job_monitoring_interval {JOB_MONITORING_INTERVAL_S} s (default 30), result_ttl {RESULT_TTL_S} s; "
            f"a killed worker's job is found abandoned once its heartbeat ran out "
            f"({JOB_MONITORING_INTERVAL_S} + 60 s); results in Redis")
STATES = {JobStatus.FINISHED: "succeeded", JobStatus.FAILED: "failed", JobStatus.CANCELED: "failed",
          JobStatus.STOPPED: "failed"}  # queued, started, scheduled, deferred: pending


def _epoch(moment: datetime.datetime) -> float:
    # RQ writes UTC and reads it back without a zone.
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)).timestamp()


class Adapter:
    def __init__(self):
        self.redis = Redis.from_url(os.environ["PEER_REDIS_URL"])
        self.queue = Queue("default", connection=self.redis)

    def prepare(self) -> dict:
        return {"settings": SETTINGS, "versions": {name: importlib.metadata.version(name) for name in ("rq", "redis")}}

    def run_worker(self, name: str) -> None:
        Worker([self.queue], connection=self.redis, maintenance_interval=MAINTENANCE_INTERVAL_S,
               worker_ttl=WORKER_TTL_S, job_monitoring_interval=JOB_MONITORING_INTERVAL_S).work(logging_level="WARNING")

    def connect(self) -> None:
        self.redis.ping()

    def _enqueue(self, function, *args) -> str:
        return self.queue.enqueue(function, *args, retry=Retry(max=3), result_ttl=RESULT_TTL_S).id

    def submit(self, index: int) -> str:
        return self._enqueue(workload.checksum, {"n": index})

    def submit_slow(self, index: int, seconds: float, marker_file: str) -> str:
        return self._enqueue(workload.slow, index, seconds, marker_file)

    def count_done(self, expected: int) -> int:
        return self.queue.finished_job_registry.get_job_count(cleanup=False)

    def _jobs(self, ids: list[str]) -> list[Job]:
        return [job for job in Job.fetch_many(ids, connection=self.redis) if job is not None]

    def done_span(self) -> tuple[float | None, float | None]:
        ended = [_epoch(job.ended_at) for job in self._jobs(self.queue.finished_job_registry.get_job_ids())
                 if job.func_name.endswith("checksum")]
        return (min(ended), max(ended)) if ended else (None, None)

    def outcomes(self, ids: list[str]) -> dict[str, dict]:
        found = {}
        for job in self._jobs(ids):
            state = STATES.get(job.get_status(refresh=False), "pending")
            found[job.id] = {"state": state, "runs": None,
                             "done_at": _epoch(job.ended_at) if state == "succeeded" else None}
        return with_pending(ids, found)
