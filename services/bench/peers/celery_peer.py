"""Celery: Redis as the broker, results in PostgreSQL (the `db+postgresql+psycopg://` result
backend, SQLAlchemy), with the reliability settings Celery documents for tasks that must not be
lost with their worker: ``task_acks_late`` (a message is acknowledged once its task ended, not
when a worker took it) and ``task_reject_on_worker_lost`` (a task whose pool process died goes
back to the queue instead of being acknowledged as failed). Over Redis an unacknowledged message
comes back once its ``visibility_timeout`` passed (default an hour; here a few seconds, above
the longest a task waits in a worker's prefetch and runs): kombu looks for such messages when a
worker starts, then on every 10th of its 10 s ticks, so a killed worker's tasks come back
within about 100 s of the survivors' start.

Environment: PEER_REDIS_URL, PEER_PG_URL (``postgresql+psycopg://user:password@host:port/db``).
"""

from __future__ import annotations

import importlib.metadata
import os

from celery import Celery

from peers import workload
from peers.result_rows import ReadsResultRows, ResultRows

VISIBILITY_TIMEOUT_S = 5
# Each worker: Celery's default pool, prefork, with one child process that runs the tasks (the
# parent reads the broker and acknowledges). Not "solo" (the worker runs them itself): outside a
# forked child Celery's database backend opens a new PostgreSQL connection for every result
# (SQLAlchemy's NullPool; measured here: 64 tasks/s against hundreds).
SETTINGS = (f"task_acks_late, task_reject_on_worker_lost, visibility_timeout {VISIBILITY_TIMEOUT_S} s, "
            "prefetch multiplier 4 (default), pool prefork with 1 child a worker, mingle and gossip off; "
            "results in PostgreSQL (db+postgresql+psycopg)")


def make_app() -> Celery:
    pg_url = os.environ["PEER_PG_URL"]
    app = Celery("bench_peers", broker=os.environ["PEER_REDIS_URL"], backend="db+" + pg_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        # Celery writes date_done as an aware UTC time into a column without time zone:
        # PostgreSQL stores it in the session's zone, so that zone is UTC.
        database_engine_options={"connect_args": {"options": "-c timezone=UTC"}},
        worker_hijack_root_logger=False,
    )
    app.task(name="checksum")(workload.checksum)
    app.task(name="slow")(workload.slow)
    return app


class Adapter(ReadsResultRows):
    def __init__(self):
        self.app = make_app()
        # The backend's rows read directly (one query, not one per task): its table and columns.
        self.rows = ResultRows(os.environ["PEER_PG_URL"].replace("postgresql+psycopg://", "postgresql://"),
                               table="celery_taskmeta", task_id="task_id", ids_param="%s", status="status",
                               done_at="date_done", checksum_succeeded="status = 'SUCCESS'",
                               states={"SUCCESS": "succeeded", "FAILURE": "failed", "REVOKED": "failed"})

    def prepare(self) -> dict:
        self.app.backend.ResultSession().close()  # the result tables, before two workers race to create them
        return {"settings": SETTINGS,
                "versions": {name: importlib.metadata.version(name) for name in ("celery", "kombu", "redis", "SQLAlchemy")}}

    def run_worker(self, name: str) -> None:
        self.app.worker_main(["worker", "--pool=prefork", "--concurrency=1", f"--hostname=bench{name}@%h",
                              "--loglevel=WARNING", "--without-mingle", "--without-gossip"])

    def connect(self) -> None:
        # What the first send would otherwise do on the clock: the result backend (it creates its
        # tables at setup) and the broker connection.
        self.app.backend
        with self.app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=3)

    def submit(self, index: int) -> str:
        return self.app.tasks["checksum"].delay({"n": index}).id

    def submit_slow(self, index: int, seconds: float, marker_file: str) -> str:
        return self.app.tasks["slow"].delay(index, seconds, marker_file).id
