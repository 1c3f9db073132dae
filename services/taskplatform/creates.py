"""The API's group commit of creates (issue 23: submit rate). An API process serves many
creates at once; each used to make its own INSERT (one statement, one commit) and its own XADD.
Here the creates in flight share them, as the worker's claims and completions do
(``batching``): what arrives while an INSERT is out goes in the next one, one statement for all,
and the tasks it committed go on their streams in one pipeline, while the next INSERT is out —
the pipeline the rate-limit counts of the requests just arrived share (``Services.redis_round``).
Nothing waits for a timer: a create alone goes at once.

What each request is told is its own: its task (created, or the one its idempotency key named:
``TaskStore.create_many``), or its own refusal. It is answered only once the statement that
carried its row committed, and (as before) once its task's XADD was sent or failed. A statement
that fails for PostgreSQL being away fails every request it carried (each answers 503 as one
alone would); none of its rows is committed, as it is one statement."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from taskplatform import batching, queue, store

log = logging.getLogger("taskplatform.api")


class Creates:
    """One API process's creates and enqueues, batched. ``store``: its ``TaskStore``;
    ``redis_round``: ``Services.redis_round``, which sends an enqueue with the other requests'
    Redis commands and waits for it within the Redis timeout (then the request goes on: the
    task is committed, the reconciler enqueues it later)."""

    def __init__(self, tasks: store.TaskStore, redis_round: Callable[[Callable], Awaitable[list]]):
        self.tasks, self.redis_round = tasks, redis_round
        self.inserts = batching.Batch(self.tasks.create_many)

    async def create(self, tenant: str, task: store.NewTask, max_attempts: int) -> tuple[dict, bool]:
        """(task, created), as ``TaskStore.create``: its refusal raised as it raises it."""
        answer = await self.inserts.submit(store.Create(tenant, task, max_attempts))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def enqueue(self, entries: list[tuple[str, str]]) -> None:
        """(task id, stream) each, with the other requests' Redis commands in one pipeline."""
        await self.redis_round(functools.partial(queue.add_entries, entries=entries))
