"""A worker's reads of its streams in turn (``queue.InTurnReader``: one script, one round trip)
against a real Redis of its own: the order of the streams, the count, what is left for other
consumers, and the errors XREADGROUP itself gives."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from taskplatform import queue
from taskplatform_testing.servers import Redis

HIGH, NORMAL, LOW = (queue.stream_for("reports", priority) for priority in (9, 5, 0))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = Redis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def run(redis_server, scenario):
    async def main():
        client = queue.connect("127.0.0.1", redis_server.port, redis_server.password)
        try:
            await client.flushall()
            return await scenario(client, queue.InTurnReader(client))
        finally:
            await client.aclose()
    return asyncio.run(main())


async def fill(client, entries: dict[str, list[str]]) -> None:
    for stream in (HIGH, NORMAL, LOW):
        await queue.ensure_group(client, stream)
    for stream, task_ids in entries.items():
        for task_id in task_ids:
            await queue.enqueue(client, task_id, stream)


def task_ids(replies) -> list[tuple[str, str]]:
    return [(stream.decode(), fields[b"task_id"].decode()) for stream, messages in replies for _, fields in messages]


def test_streams_are_read_in_the_order_given_up_to_the_count(redis_server):
    async def scenario(client, read):
        await fill(client, {LOW: ["l1", "l2"], NORMAL: ["n1"], HIGH: ["h1", "h2"]})
        first = await read("w1", [HIGH, NORMAL, LOW], 4)
        rest = await read("w1", [HIGH, NORMAL, LOW], 10)
        return first, rest

    first, rest = run(redis_server, scenario)
    assert task_ids(first) == [(HIGH, "h1"), (HIGH, "h2"), (NORMAL, "n1"), (LOW, "l1")]
    assert task_ids(rest) == [(LOW, "l2")]


def test_what_is_not_taken_stays_for_other_consumers(redis_server):
    async def scenario(client, read):
        await fill(client, {NORMAL: ["n1", "n2", "n3"]})
        mine = await read("w1", [HIGH, NORMAL, LOW], 1)
        pending = (await client.xpending(NORMAL, queue.GROUP))["pending"]
        theirs = await read("w2", [HIGH, NORMAL, LOW], 10)
        return mine, pending, theirs

    mine, pending, theirs = run(redis_server, scenario)
    assert task_ids(mine) == [(NORMAL, "n1")]
    assert pending == 1  # one taken, one pending: the script over-takes nothing
    assert task_ids(theirs) == [(NORMAL, "n2"), (NORMAL, "n3")]


def test_empty_streams_give_nothing_and_a_missing_group_is_nogroup(redis_server):
    async def scenario(client, read):
        await fill(client, {})
        empty = await read("w1", [HIGH, NORMAL, LOW], 5)
        none_asked = await read("w1", [], 5)
        with pytest.raises(ResponseError, match="NOGROUP"):
            await read("w1", ["tasks:queue:nobody:high"], 5)
        return empty, none_asked

    assert run(redis_server, scenario) == ([], [])
