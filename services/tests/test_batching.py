"""``batching.Batch``, the worker's group commit, without Redis or PostgreSQL: what arrives
while a flush is out goes together in the next one, each caller gets its own answer, a failed
flush fails exactly its own callers, and a cancelled caller does not cancel the others'."""

import asyncio

import pytest

from taskplatform.batching import Batch


class Recorder:
    """A flush that records what it carried and waits until released."""

    def __init__(self, fail_on: int | None = None):
        self.carried: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def __call__(self, items):
        self.carried.append(list(items))
        await self.release.wait()
        if self.fail_on in items:
            raise ConnectionError(f"flush of {list(items)} failed")
        return [item * 10 for item in items]


def test_items_arriving_during_a_flush_go_together_in_the_next_one():
    async def main():
        flush = Recorder()
        batch = Batch(flush)
        first = asyncio.create_task(batch.submit(1))
        await asyncio.sleep(0)  # the first flush is out with item 1 alone: no wait for company
        rest = [asyncio.create_task(batch.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        assert flush.carried == [[1]]
        flush.release.set()
        assert await first == 10
        assert await asyncio.gather(*rest) == [20, 30, 40]
        assert flush.carried == [[1], [2, 3, 4]] and batch.flushes == 2
    asyncio.run(main())


def test_a_flush_carries_at_most_its_bound():
    async def main():
        flush = Recorder()
        flush.release.set()
        batch = Batch(flush, most=2)
        assert await asyncio.gather(*(batch.submit(n) for n in range(5))) == [0, 10, 20, 30, 40]
        assert flush.carried == [[0, 1], [2, 3], [4]]
    asyncio.run(main())


def test_a_failed_flush_fails_its_own_callers_and_the_next_flush_goes_on():
    async def main():
        flush = Recorder(fail_on=2)
        batch = Batch(flush)
        first = asyncio.create_task(batch.submit(1))
        await asyncio.sleep(0)
        failing = [asyncio.create_task(batch.submit(n)) for n in (2, 3)]
        flush.release.set()
        assert await first == 10
        for task in failing:
            with pytest.raises(ConnectionError, match=r"flush of \[2, 3\] failed"):
                await task
        assert await batch.submit(5) == 50  # a new flush after the failed one
    asyncio.run(main())


def test_a_cancelled_caller_leaves_the_flush_its_item_shares():
    async def main():
        gates = [asyncio.Event(), asyncio.Event()]
        carried = []

        async def flush(items):  # each flush waits for its own gate
            carried.append(list(items))
            await gates[len(carried) - 1].wait()
            return [item * 10 for item in items]

        batch = Batch(flush)
        first = asyncio.create_task(batch.submit(0))
        await asyncio.sleep(0)
        cancelled, kept = asyncio.create_task(batch.submit(1)), asyncio.create_task(batch.submit(2))
        await asyncio.sleep(0)
        gates[0].set()
        assert await first == 0
        for _ in range(10):  # the flush of 1 and 2 goes out within a few loop turns
            if len(carried) == 2:
                break
            await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        gates[1].set()
        assert await kept == 20
        assert cancelled.cancelled()
        assert carried == [[0], [1, 2]]
    asyncio.run(main())
