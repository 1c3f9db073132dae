"""Redis Streams dispatch. Redis only carries task ids; losing a message loses no task (a
worker recovers it from PostgreSQL), and a duplicate is harmless (claims are conditional).

One stream per queue and priority band (``stream_for``): a kind declares its queue, a task's
priority (0-9) picks the band. A worker reads each queue apart, with that queue's own slots
(``lanes.Lane``), and within a queue the high band before the normal one before the low one.
Why bands and not ten streams: every empty stream a read passes costs a step of its script
(``InTurnReader``) and the blocking read one more key before a task starts, and three steps
are what callers tell apart in practice (urgent, normal, bulk); within a band the order is
FIFO. PostgreSQL keeps the exact priority.

The default queue's normal band is ``tasks:stream``, the one stream of the releases before
queues: an older colour's API (which puts every task there) and its workers (which read only
that one) keep working beside a newer colour during a release.

Every worker reads the shared streams; a worker of a release colour also reads its colour's,
where the API of that colour puts the tasks created through the preview route (the release's
smoke test must be served by the new colour's workers, before users are)."""

from __future__ import annotations

from typing import NamedTuple

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ResponseError

from taskplatform.secrets import optional

STREAM = "tasks:stream"
GROUP = "workers"
MAXLEN = 200_000  # approximate trim; entries are acked long before this
DEFAULT_QUEUE = "default"
DEFAULT_PRIORITY = 5
PRIORITIES = range(0, 10)  # 0 lowest, 9 highest
# Bands, highest first: (name, lowest priority in it).
BANDS = (("high", 7), ("normal", 4), ("low", 0))


class Message(NamedTuple):
    """A stream entry a worker took: acked on the stream it came from."""
    stream: str
    id: str


def band_of(priority: int) -> str:
    """The band of a priority: high (7-9), normal (4-6), low (0-3)."""
    return next(name for name, lowest in BANDS if priority >= lowest)


def stream_for(queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY, colour: str = "") -> str:
    """The stream of a task of ``queue`` and ``priority``; with ``colour``, that colour's own
    (the preview route's tasks). The default queue's normal band keeps the names of the
    releases before queues (``tasks:stream``, ``tasks:stream:<colour>``)."""
    band = band_of(priority)
    if queue == DEFAULT_QUEUE and band == "normal":
        name = STREAM
    else:
        name = f"tasks:queue:{queue}:{band}"
    return f"{name}:{colour}" if colour else name


def colour_stream(colour: str) -> str:
    return stream_for(colour=colour)


def queue_streams(queue: str, colour: str = "") -> list[str]:
    """The streams of ``queue`` a worker of ``colour`` reads, highest band first (within a band
    the shared stream before its colour's)."""
    streams = []
    for _, lowest in BANDS:
        streams.append(stream_for(queue, lowest))
        if colour:
            streams.append(stream_for(queue, lowest, colour))
    return streams


def streams_for(colour: str, queues: list[str] | tuple[str, ...] = (DEFAULT_QUEUE,)) -> list[str]:
    """Every stream a worker of ``colour`` reads, over ``queues``."""
    return [stream for queue in queues for stream in queue_streams(queue, colour)]


class LivePassword(CredentialProvider):
    """A password read from its secret source at each new connection, so a rotated one (Vault's
    copy kept current by the credential keeper) is used without a restart: the connections
    already open stay logged in, and Redis accepts both passwords while a rotation runs."""

    def __init__(self, secrets, name: str):
        self.secrets, self.name = secrets, name

    def get_credentials(self):
        return (self.secrets.get(self.name),)

    async def get_credentials_async(self):
        return self.get_credentials()


def connect(host: str, port: int, password: str | CredentialProvider, sentinels: list[tuple[str, int]] | None = None,
            master_name: str = "tasks", sentinel_password: str | CredentialProvider | None = None) -> redis.Redis:
    """A client of the current master: through Sentinel when there are Sentinels (it follows a
    failover on the next command that fails), else the given master directly. A password is a
    value, or a ``LivePassword`` read at each new connection."""
    # Fail fast (one quick retry): during a Redis outage the API must keep answering (the row is
    # committed; the reconciler enqueues later) and the worker has its own backoff loop.
    options = dict(_auth(password), socket_timeout=5, socket_connect_timeout=2, health_check_interval=10,
                   retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1))
    if sentinels:
        # The Sentinels have a password of their own (anonymous clients could otherwise point
        # them at a rogue master): a Sentinel client learns nothing of the data's password.
        sentinel = Sentinel(sentinels, socket_timeout=2, socket_connect_timeout=2,
                            sentinel_kwargs=_auth(sentinel_password) if sentinel_password else None)
        return sentinel.master_for(master_name, **options)
    return redis.Redis(host=host, port=port, **options)


def connect_for(settings, secrets) -> redis.Redis:
    """A process's client, as its settings say, on passwords read at each new connection."""
    sentinel_password = LivePassword(secrets, "sentinel_password") if optional(secrets, "sentinel_password") else None
    return connect(settings.redis_host, settings.redis_port, LivePassword(secrets, "redis_password"),
                   settings.sentinels(), settings.redis_master_name, sentinel_password)


def _auth(password: str | CredentialProvider) -> dict:
    return {"credential_provider": password} if isinstance(password, CredentialProvider) else {"password": password}


async def enqueue(client: redis.Redis, task_id: str, stream: str = STREAM) -> None:
    await client.xadd(stream, {"task_id": task_id}, maxlen=MAXLEN, approximate=True)


def add_entries(pipe, entries: list[tuple[str, str]]) -> int:
    """(task id, stream) each as an XADD on ``pipe`` (a pipeline, not a transaction: an entry
    added is a task that may run, whatever happens to the others); how many commands that is."""
    for task_id, stream in entries:
        pipe.xadd(stream, {"task_id": task_id}, maxlen=MAXLEN, approximate=True)
    return len(entries)


async def ensure_group(client: redis.Redis, stream: str = STREAM) -> None:
    # From id 0: if Redis lost the group (restart without data), everything still in the
    # stream is delivered again; claims make that harmless.
    try:
        await client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# Up to ARGV[3] new entries of the streams KEYS for consumer ARGV[2] of group ARGV[1], the streams
# asked in their order (highest band first) until that many are taken: one round trip, where a
# read per stream from the worker cost one for each empty stream it passed, on the event loop
# that is starting the task just taken (latency) or the next batch (drain rate). Without BLOCK:
# a script cannot wait; the worker's blocking read of all of them is its own command.
_READ_IN_TURN = """
local taken, left = {}, tonumber(ARGV[3])
for _, stream in ipairs(KEYS) do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', stream, '>')
  if reply then
    table.insert(taken, reply[1])
    left = left - #reply[1][2]
    if left <= 0 then break end
  end
end
return taken
"""


class InTurnReader:
    """Reads of a client's streams, each asked in turn in one round trip (``_READ_IN_TURN``)."""

    def __init__(self, client: redis.Redis):
        self._read = client.register_script(_READ_IN_TURN)  # EVALSHA; loaded again after a failover

    async def __call__(self, consumer: str, streams: list[str], count: int) -> list[tuple[bytes, list]]:
        """Up to ``count`` new entries of ``streams`` for ``consumer``, in the order given (the
        first stream's before the second's), without waiting: [(stream, [(id, {field: value})])],
        as XREADGROUP answers. A missing group raises NOGROUP, as XREADGROUP does."""
        if not streams or count <= 0:
            return []
        replies = await self._read(keys=list(streams), args=[GROUP, consumer, count])
        return [(stream, [(message_id, dict(zip(fields[::2], fields[1::2]))) for message_id, fields in messages])
                for stream, messages in replies]


async def queue_depth(client: redis.Redis) -> tuple[int, int]:
    """(stream length, pending entries of the group) of the shared stream (the default queue's
    normal band)."""
    length = await client.xlen(STREAM)
    try:
        pending = (await client.xpending(STREAM, GROUP))["pending"]
    except ResponseError:
        pending = 0
    return length, pending


# Atomic, so a consumer cannot read (gain pending entries) between the check and the removal;
# removing one drops its pending entries, hence only consumers that have none.
_FORGET_IDLE_CONSUMERS = """
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if consumers['err'] then return {} end  -- no stream or group yet: nobody to forget
local removed = {}
for _, consumer in ipairs(consumers) do
  local field = {}
  for i = 1, #consumer, 2 do field[consumer[i]] = consumer[i + 1] end
  if field['pending'] == 0 and field['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field['name'])
    table.insert(removed, field['name'])
  end
end
return removed
"""


async def forget_idle_consumers(client: redis.Redis, idle_seconds: float, stream: str = STREAM) -> list[str]:
    """Remove the group's consumers idle for longer than ``idle_seconds`` that hold no pending
    entries: workers that went away (each run is a new consumer, `host-pid`), including those
    whose entries other workers reclaimed. A live worker removed while it waited for slots
    comes back with its next read."""
    removed = await client.eval(_FORGET_IDLE_CONSUMERS, 1, stream, GROUP, int(idle_seconds * 1000))
    return [name.decode() if isinstance(name, bytes) else name for name in removed]
