"""The cluster's bucket of a queue (``queue_rate``) against the session's real Redis: many takers
at once (as many workers) never get more than the rate plus the burst in any span, the rate
changes at the next take, and queues do not share a bucket; a worker's fallback while Redis is
away. The workers' use of it over three processes is in ``test_queues.py``."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import redis.asyncio as redis

from taskplatform import queue, queue_rate
from taskplatform.runtime_config import FileConfigSource
from taskplatform.secrets import FileSecretSource
from taskplatform.settings import ProcessSettings
from taskplatform.worker import Worker
from taskplatform_testing.servers import RUNTIME_DEFAULTS, free_port


def run(platform, scenario):
    async def main():
        client = redis.Redis(port=platform.redis.port, password=platform.redis.password)
        try:
            return await scenario(queue_rate.ClusterRate(client))
        finally:
            await client.aclose()
    return asyncio.run(main())


async def take_for(rates: queue_rate.ClusterRate, queue: str, rate: float, takers: int, seconds: float) -> list:
    """``takers`` loops taking one start at a time for ``seconds``, each waiting as told: the
    instants (monotonic) of the starts granted."""
    granted: list[float] = []
    end = time.monotonic() + seconds

    async def taker():
        while time.monotonic() < end:
            grant = await rates.take(queue, rate)
            if grant.granted:
                granted.append(time.monotonic())
            else:
                await asyncio.sleep(min(grant.wait_seconds, 0.05))

    await asyncio.gather(*(taker() for _ in range(takers)))
    return granted


def most_in_a_window(instants: list[float], window: float = 1.0) -> int:
    instants = sorted(instants)
    return max(sum(1 for s in instants if first <= s < first + window) for first in instants)


def test_eight_takers_share_one_rate(platform):
    rate, seconds = 40.0, 3.0
    granted = run(platform, lambda rates: take_for(rates, f"q-{uuid.uuid4().hex[:6]}", rate, 8, seconds))
    burst = queue_rate.burst_of(rate)  # 4 at once after an idle spell
    # Redis's clock decides; ours reads the grant a round trip later: a few ms of slack.
    assert most_in_a_window(granted, 0.995) <= rate + burst, most_in_a_window(granted)
    assert len(granted) <= rate * seconds + burst
    assert len(granted) >= rate * seconds * 0.9, f"{len(granted)} starts in {seconds} s at {rate}/s"


def test_a_batch_take_is_bounded_by_the_burst_and_says_how_long_to_wait(platform):
    async def scenario(rates):
        queue = f"q-{uuid.uuid4().hex[:6]}"
        first = await rates.take(queue, 20.0, wanted=10)
        second = await rates.take(queue, 20.0, wanted=10)
        return first, second

    first, second = run(platform, scenario)
    assert first.granted == 2 and first.wait_seconds > 0  # 20/s: a tenth of a second's worth
    assert second.granted == 0 and 0 < second.wait_seconds <= 0.05 + 0.001


def test_a_rate_change_applies_at_the_next_take_and_queues_are_apart(platform):
    async def scenario(rates):
        queue, other = f"q-{uuid.uuid4().hex[:6]}", f"q-{uuid.uuid4().hex[:6]}"
        slow = await take_for(rates, queue, 5.0, 4, 2.0)
        fast = await take_for(rates, queue, 50.0, 4, 2.0)
        beside = await rates.take(other, 5.0)
        return slow, fast, beside

    slow, fast, beside = run(platform, scenario)
    assert 9 <= len(slow) <= 11, len(slow)  # 5/s for 2 s (+1 burst)
    assert 90 <= len(fast) <= 106, len(fast)  # 50/s for 2 s (+5 burst), no restart, the same key
    assert beside.granted == 1  # another queue's bucket is its own


def test_a_worker_falls_back_to_its_own_bucket_while_redis_is_away_and_back_after(platform, tmp_path):
    """Redis away (a port where nothing listens): the start is taken from the worker's own bucket
    at the queue's rate, so what it recovered from PostgreSQL still starts; Redis back: the
    cluster's bucket again. The worker in-process, its start decision alone."""
    config_file = tmp_path / "runtime.json"
    config_file.write_text(json.dumps(RUNTIME_DEFAULTS))
    settings = ProcessSettings(pg_host="127.0.0.1", pg_port=platform.pg.port, pg_database=platform.pg.database,
                               pg_user=platform.pg.user, redis_host="127.0.0.1", redis_port=platform.redis.port,
                               secrets_dir=str(platform.secrets_dir), config_file=str(config_file),
                               heartbeat_file=str(tmp_path / "heartbeat"))
    source = FileConfigSource(config_file)
    source.load_initial()

    async def main():
        worker = Worker(settings, FileSecretSource(settings.secrets_dir), source)
        lane = worker.lanes[queue.DEFAULT_QUEUE]
        away = redis.Redis(port=free_port(), password=platform.redis.password, socket_connect_timeout=1)
        here = redis.Redis(port=platform.redis.port, password=platform.redis.password)
        try:
            worker.rate = queue_rate.ClusterRate(away)
            first = await worker._take_start(lane, 2.0)
            second = await worker._take_start(lane, 2.0)  # the own bucket: one start, then 0.5 s
            fallback = (lane.rate_fallback, lane.redis_ok)
            worker.rate, lane.redis_ok = queue_rate.ClusterRate(here), True  # the lane's next read succeeded
            back = await worker._take_start(lane, 2.0)
            return first, second, fallback, back, lane.rate_fallback
        finally:
            await away.aclose()
            await here.aclose()

    first, second, fallback, back, still = asyncio.run(main())
    assert first == (0.0, None) and 0.4 < second[0] <= 0.5 and second[1] is None
    assert fallback == (True, False)
    assert back == (0.0, (queue.DEFAULT_QUEUE, 2.0)) and still is False  # charged to the cluster again
