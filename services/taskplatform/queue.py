"""Redis Streams dispatch. Redis only carries task ids; losing a message loses no task (the
reconciler re-enqueues from PostgreSQL), and a duplicate is harmless (claims are conditional)."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError

STREAM = "tasks:stream"
GROUP = "workers"
MAXLEN = 200_000  # approximate trim; entries are acked long before this


def connect(host: str, port: int, password: str, sentinels: list[tuple[str, int]] | None = None,
            master_name: str = "tasks", sentinel_password: str | None = None) -> redis.Redis:
    """A client of the current master: through Sentinel when there are Sentinels (it follows a
    failover on the next command that fails), else the given master directly."""
    # Fail fast (one quick retry): during a Redis outage the API must keep answering (the row is
    # committed; the reconciler enqueues later) and the worker has its own backoff loop.
    options = dict(password=password, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10,
                   retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1))
    if sentinels:
        # The Sentinels have a password of their own (anonymous clients could otherwise point
        # them at a rogue master): a Sentinel client learns nothing of the data's password.
        sentinel = Sentinel(sentinels, socket_timeout=2, socket_connect_timeout=2,
                            sentinel_kwargs={"password": sentinel_password} if sentinel_password else None)
        return sentinel.master_for(master_name, **options)
    return redis.Redis(host=host, port=port, **options)


async def enqueue(client: redis.Redis, task_id: str) -> None:
    await client.xadd(STREAM, {"task_id": task_id}, maxlen=MAXLEN, approximate=True)


async def ensure_group(client: redis.Redis) -> None:
    # From id 0: if Redis lost the group (restart without data), everything still in the
    # stream is delivered again; claims make that harmless.
    try:
        await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def queue_depth(client: redis.Redis) -> tuple[int, int]:
    """(stream length, pending entries of the group)."""
    length = await client.xlen(STREAM)
    try:
        pending = (await client.xpending(STREAM, GROUP))["pending"]
    except ResponseError:
        pending = 0
    return length, pending


def _id(entry_id) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def has_undelivered(client: redis.Redis) -> bool:
    """True when the stream holds entries the group has not read yet. Compares the newest entry
    with the group's last-delivered id (the group's 'lag' counter is not trustworthy after a
    failover or a trim)."""
    newest = await client.xrevrange(STREAM, count=1)
    if not newest:
        return False
    for group in await client.xinfo_groups(STREAM):
        name = group.get("name") or group.get(b"name")
        if name in (GROUP, GROUP.encode()):
            return _id(newest[0][0]) > _id(group.get("last-delivered-id") or group.get(b"last-delivered-id"))
    return False
