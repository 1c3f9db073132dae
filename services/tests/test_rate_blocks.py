"""``rate_blocks.RateBlocks``, a tenant's per-minute count taken in blocks, against a counter
that behaves as Redis's INCRBY (one order for every process), without Redis: every count is
handed out once across processes, a request is counted alone near the limit and as a process's
first of a minute, a block is waited for rather than taken twice, and Redis's failure reaches
every request that waited for the block."""

import asyncio

import pytest

from taskplatform.rate_blocks import FRESH_SECONDS, MOST, SHARE, RateBlocks, block_size


class Counter:
    """INCRBY on one shared dict, each call a round trip (the event loop turns once)."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.calls: list[tuple[str, int]] = []
        self.answered: list[tuple[int, int]] = []  # (n, the count it made)
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None  # set: each answer waits for it

    async def __call__(self, key: str, n: int) -> int:
        self.calls.append((key, n))
        await (self.gate.wait() if self.gate else asyncio.sleep(0))
        if self.fail is not None:
            raise self.fail
        self.counts[key] = self.counts.get(key, 0) + n
        self.answered.append((n, self.counts[key]))
        return self.counts[key]


def test_a_block_is_small_against_what_is_left_and_one_near_the_limit():
    assert block_size(10_000_000, 0) == MOST
    assert block_size(1_000, 0) == 1_000 // SHARE
    assert block_size(1_000, 1_000 - 2 * SHARE + 1) == 1  # within 2 * SHARE of the limit: alone
    assert block_size(5, 0) == 1
    assert block_size(5, 9) == 1  # past the limit
    assert block_size(10_000_000, None) == 1  # the count not known well enough


def test_counts_are_handed_out_once_across_processes_and_far_fewer_round_trips_than_requests():
    async def main():
        redis = Counter()
        processes = [RateBlocks(redis, 1.0), RateBlocks(redis, 1.0), RateBlocks(redis, 1.0)]
        firsts = [await process.next_count("t:1", 1, 10_000_000) for process in processes]  # each alone
        counts = firsts + await asyncio.gather(*(processes[i % 3].next_count("t:1", 1, 10_000_000) for i in range(600)))
        return redis, counts

    redis, counts = asyncio.run(main())
    assert len(set(counts)) == 603  # no count twice
    assert max(counts) <= redis.counts["t:1"]  # each one a count Redis made
    assert len(redis.calls) < 603 / 10
    assert max(n for _, n in redis.calls) == MOST


def test_each_process_counts_its_first_request_of_a_minute_alone_then_takes_blocks():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 1.0)
        first = await blocks.next_count("t:1", 1, 10_000_000)
        second = await blocks.next_count("t:1", 1, 10_000_000)
        third = await blocks.next_count("t:1", 1, 10_000_000)
        return redis, (first, second, third)

    redis, counts = asyncio.run(main())
    assert counts == (1, 2, 3)
    assert redis.calls == [("t:1", 1), ("t:1", MOST)]


def test_near_the_limit_every_request_is_counted_alone_so_the_429_is_exact():
    async def main():
        redis = Counter()
        one, other = RateBlocks(redis, 1.0), RateBlocks(redis, 1.0)
        limit = 3 * SHARE
        counts = [await (one if i % 2 else other).next_count("t:1", 1, limit) for i in range(limit + 5)]
        return redis, limit, counts

    redis, limit, counts = asyncio.run(main())
    assert len(set(counts)) == len(counts)
    assert any(n > 1 for n, _ in redis.answered)  # far from the limit: blocks
    # near the limit (a process knows the count as of its last answer: within SHARE of it,
    # whatever the other did since), one at a time
    assert all(n == 1 for n, made in redis.answered if made - n >= limit - SHARE)
    allowed = sum(1 for c in counts if c <= limit)
    assert limit - 2 <= allowed <= limit  # at most a count a process held unused, never over the limit


def test_requests_arriving_while_a_block_is_taken_wait_for_it_instead_of_taking_their_own():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 1.0)
        await blocks.next_count("t:1", 1, 10_000_000)  # the minute's first, alone
        counts = await asyncio.gather(*(blocks.next_count("t:1", 1, 10_000_000) for _ in range(MOST)))
        return redis, counts

    redis, counts = asyncio.run(main())
    assert sorted(counts) == list(range(2, MOST + 2))
    assert redis.calls == [("t:1", 1), ("t:1", MOST)]


def test_a_later_minute_starts_afresh_and_an_earlier_minutes_request_is_counted_alone():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 1.0)
        for _ in range(3):
            await blocks.next_count("t:1", 1, 10_000_000)
        late = await blocks.next_count("t:2", 2, 10_000_000)  # the next minute: its first, alone
        straggler = await blocks.next_count("t:1", 1, 10_000_000)  # began in minute 1
        return redis, late, straggler

    redis, late, straggler = asyncio.run(main())
    assert late == 1 and straggler == redis.counts["t:1"]
    assert redis.calls[-2:] == [("t:2", 1), ("t:1", 1)]


def test_when_redis_fails_taking_a_block_every_request_waiting_for_it_is_told():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 1.0)
        await blocks.next_count("t:1", 1, 10_000_000)
        redis.fail = ConnectionError("redis away")
        results = await asyncio.gather(*(blocks.next_count("t:1", 1, 10_000_000) for _ in range(4)),
                                       return_exceptions=True)
        calls_while_down = len(redis.calls) - 1
        redis.fail = None
        after = await blocks.next_count("t:1", 1, 10_000_000)
        return results, calls_while_down, after

    results, calls_while_down, after = asyncio.run(main())
    assert all(isinstance(r, ConnectionError) for r in results)
    assert calls_while_down == 1  # one attempt, not one timeout after another
    assert after == 2  # Redis back: counting goes on from its count


def test_a_cancelled_request_does_not_strand_the_others_waiting_for_its_block():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 1.0)
        await blocks.next_count("t:1", 1, 10_000_000)
        redis.gate = asyncio.Event()
        taker = asyncio.create_task(blocks.next_count("t:1", 1, 10_000_000))
        await asyncio.sleep(0)  # its INCRBY is out, held at the gate
        waiter = asyncio.create_task(blocks.next_count("t:1", 1, 10_000_000))
        await asyncio.sleep(0)  # waiting for the taker's block
        assert redis.calls == [("t:1", 1), ("t:1", MOST)]  # the taker's INCRBY is the one out
        taker.cancel()
        redis.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await taker
        return await asyncio.wait_for(waiter, 1)

    assert asyncio.run(main()) >= 2


def test_a_process_whose_last_answer_is_old_counts_its_next_request_alone():
    now = [0.0]

    async def main():
        redis = Counter()
        idle, busy = RateBlocks(redis, 1.0, clock=lambda: now[0]), RateBlocks(redis, 1.0, clock=lambda: now[0])
        await idle.next_count("t:1", 1, 10_000)  # saw the count at 1
        for _ in range(5_000):
            await busy.next_count("t:1", 1, 10_000)  # the others count on meanwhile
        now[0] += FRESH_SECONDS + 0.1
        before = len(redis.calls)
        count = await idle.next_count("t:1", 1, 10_000)
        return redis.calls[before:], count

    calls, count = asyncio.run(main())
    assert calls == [("t:1", 1)]  # alone: its block would have been sized on a count 5,000 old
    assert count > 5_000


def test_waiting_for_a_block_is_bounded_and_a_take_that_failed_makes_the_next_request_go_alone():
    async def main():
        redis = Counter()
        blocks = RateBlocks(redis, 0.05)
        await blocks.next_count("t:1", 1, 10_000_000)
        redis.gate = asyncio.Event()  # Redis hangs
        taker = asyncio.create_task(blocks.next_count("t:1", 1, 10_000_000))
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            await blocks.next_count("t:1", 1, 10_000_000)  # given up after 0.05 s, not left waiting
        taker.cancel()  # as the API's Redis timeout gives up the taker's own wait
        with pytest.raises(asyncio.CancelledError):
            await taker
        redis.gate.set()
        redis.gate = None
        before = len(redis.calls)
        await blocks.next_count("t:1", 1, 10_000_000)
        return redis.calls[before:]

    assert asyncio.run(main()) == [("t:1", 1)]
