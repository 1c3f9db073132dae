"""Group commit for the worker's per-task round trips (issue 23: drain rate and latency).

A worker runs many attempts at once (its slots), and each used to make its own round trips: a
claim UPDATE, a completion UPDATE, an XACK. ``Batch`` lets them share: a caller hands its item
and waits for its own answer; while a flush is out, the items that arrive wait together and go
in the next one, one statement (or one command) for all of them. Nothing waits for a timer or a
batch size: the first item of an idle batcher goes at once (no latency added at a trickle), and
under load a flush carries whatever arrived during the previous one (fewer round trips the
busier the worker, as PostgreSQL's own group commit).

What each caller is told is its own item's answer, given only once the flush that carried it
returned: a completion's XACK follows its own row's commit, as before. A flush that fails fails
every item it carried (each caller handles it as it handled its own round trip failing).

Pure asyncio: no Redis, no PostgreSQL (the flush function does the I/O), tested without either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Batch(Generic[Item, Answer]):
    """``flush(items)`` returns one answer per item, in order. ``most``: the most items one flush
    carries (a statement's size stays bounded; the rest go in the next flush)."""

    def __init__(self, flush: Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]], most: int = 256):
        self.flush, self.most = flush, most
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self.flushes = 0  # how many flushes ran (what tests and benches look at)

    async def submit(self, item: Item) -> Answer:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None:
            # A task of its own: a caller cancelled while its item is out (a shutdown) does not
            # cancel the flush the others' items share; its answer is dropped.
            self._flusher = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                carried, self._waiting = self._waiting[:self.most], self._waiting[self.most:]
                self.flushes += 1
                try:
                    answers = await self.flush([item for item, _ in carried])
                except BaseException as exc:  # noqa: BLE001 - every caller of this flush is told
                    for _, future in carried:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), answer in zip(carried, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._flusher = None
            # Only when this task was cancelled (the loop shutting down): nobody flushes what
            # is left, so its callers are told rather than left waiting.
            left, self._waiting = self._waiting, []
            for _, future in left:
                if not future.done():
                    future.set_exception(ConnectionAbortedError("the batch's flusher was cancelled"))
