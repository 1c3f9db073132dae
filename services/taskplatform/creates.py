"""The API's group commit of creates (issue 23: submit rate). An API process serves many
creates at once; each used to make its own INSERT (one statement, one commit) and its own XADD.
Here the creates in flight share them, as the worker's claims and completions do
(``batching``): what arrives while an INSERT is out goes in the next one, one statement for all,
and the tasks it committed go on their streams in one pipeline, while the next INSERT is out —
the pipeline the other requests' Redis commands share (``Services.redis_round``). Nothing waits
for a timer: a create alone goes at once.

What each request is told is its own: its task (created, or the one its idempotency key named:
``TaskStore.create_many``), or its own refusal. It is answered once the statement that carried
its row committed: a 202 is a task that will run. Its XADD is handed to the next Redis round and
not waited for (what it told the client would not change: a failed XADD answered 202 too; the
reconciler enqueues such a task, as one whose process died before its XADD went). Waiting for it
cost a wake-up per create, and the answer a Redis round trip. The enqueues of one process go on
the streams in the order their creates committed; a stopping API sends those still out (for up
to ``DRAIN_SECONDS``) before it closes its Redis connection (``Services.stop``). A statement that fails for PostgreSQL being
away fails every request it carried (each answers 503 as one alone would); none of its rows is
committed, as it is one statement."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from taskplatform import batching, metrics, queue, store

log = logging.getLogger("taskplatform.api")


class Creates:
    """One API process's creates and enqueues, batched. ``store``: its ``TaskStore``;
    ``redis_later``: ``Services.redis_commands.put``, which hands an enqueue to the next Redis
    round (with the other requests' commands) and returns the future of its replies."""

    def __init__(self, tasks: store.TaskStore, redis_later: Callable[[Callable], asyncio.Future]):
        self.tasks, self.redis_later = tasks, redis_later
        self.inserts = batching.Batch(self.tasks.create_many)

    async def create(self, tenant: str, task: store.NewTask, max_attempts: int) -> tuple[dict, bool]:
        """(task, created), as ``TaskStore.create``: its refusal raised as it raises it."""
        answer = await self.inserts.submit(store.Create(tenant, task, max_attempts))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def enqueue(self, entries: list[tuple[str, str]], what: str) -> None:
        """(task id, stream) each, with the other requests' Redis commands in one pipeline,
        not waited for; a failure is counted and logged (``what``: the request's kind)."""
        sent = self.redis_later(functools.partial(queue.add_entries, entries=entries))
        sent.add_done_callback(functools.partial(_report_failure, entries, what))


def _report_failure(entries: list[tuple[str, str]], what: str, sent: asyncio.Future) -> None:
    failure = sent.exception() if not sent.cancelled() else ConnectionAbortedError("the enqueue was cancelled")
    if failure is None:
        failure = next((reply for reply in sent.result() if isinstance(reply, Exception)), None)
    if failure is None:
        return
    # Committed: the reconciler enqueues them later.
    metrics.TASKS_ENQUEUE_FAILED.inc(len(entries))
    log.warning(f"enqueue failed on {what}; task stays queued for the reconciler",
                extra={"task_id": entries[0][0], "tasks": len(entries), "reason": repr(failure)})
