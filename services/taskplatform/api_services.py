"""What an API process's handlers use: its settings and sources, the token check, the
PostgreSQL pools and the Redis client, and the config watch and report. Built by ``create_app``
(kept on ``app.state.services``, reached through ``deps``), opened and closed by its lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from redis.asyncio.client import Pipeline

from taskplatform import (api_keys, batching, creates, db_credentials, limits, metrics, queue, schedules, store,
                          webhook_store)
from taskplatform.auth import Authenticator, LiveKeySet
from taskplatform.config_report import ConfigReport
from taskplatform.runtime_config import ConfigSource
from taskplatform.secrets import SecretSource
from taskplatform.settings import ProcessSettings


class Services:
    """What the handlers use; its connections are opened when the app starts (``start``, in its
    lifespan) and closed when it stops (``stop``)."""

    def __init__(self, settings: ProcessSettings, secrets: SecretSource, config: ConfigSource):
        self.settings, self.secrets, self.config = settings, secrets, config
        self.auth = Authenticator(LiveKeySet(secrets, settings.jwt_keys_refresh_seconds),
                                  settings.jwt_issuer, settings.jwt_audience)
        self.store: store.TaskStore | None = None
        self.schedules: schedules.ScheduleStore | None = None
        self.webhooks: webhook_store.WebhookStore | None = None
        self.api_keys: api_keys.ApiKeyVerifier | None = None
        self.api_key_store: api_keys.ApiKeyStore | None = None
        self.redis = None
        self.creates: creates.Creates | None = None
        # The Redis commands of the requests in flight, whatever each request needs, in one
        # pipeline (``redis_round``): a create's rate-limit count shares a round trip with the
        # enqueue of another create just committed.
        self.redis_commands = batching.Batch(self._pipelined)
        self._pools = []
        self._watch: asyncio.Task | None = None
        self._report: ConfigReport | None = None
        self._reporting: asyncio.Task | None = None
        self._metering: asyncio.Task | None = None
        # With Vault: the PostgreSQL credentials the container's keeper writes (``db_credentials``).
        self.credentials: db_credentials.PoolCredentials | None = None
        self._following: asyncio.Task | None = None

    async def _pool(self, target: str) -> limits.BoundedPool:
        s = self.settings
        pool = await db_credentials.create_pool(s, self.secrets, self.credentials, target)
        bounded = limits.BoundedPool(pool, s.pg_acquire_timeout_seconds)
        self._pools.append(bounded)
        metrics.watch_pool(bounded)
        return bounded

    async def start(self) -> None:
        s = self.settings
        if s.vault_enabled():
            self.credentials = db_credentials.PoolCredentials(s.vault_state_dir, s.vault_credentials_poll_seconds)
        pool = await self._pool("read-write")
        read_pool = await self._pool("prefer-standby") if len(s.pg_nodes()) > 1 else None
        self.store = store.TaskStore(pool, read_pool)
        self.schedules = schedules.ScheduleStore(pool)
        self.webhooks = webhook_store.WebhookStore(pool)
        # The primary's pool: a key revoked a moment ago must not be found on a lagging replica.
        self.api_key_store = api_keys.ApiKeyStore(pool)
        self.api_keys = api_keys.ApiKeyVerifier(self.api_key_store, s.api_key_cache_seconds)
        self.redis = queue.connect_for(s, self.secrets)
        self.creates = creates.Creates(self.store, self.redis_round)
        self._watch = asyncio.create_task(self.config.supervise())
        self._report = ConfigReport(self.config, s.config_state_dir, "api")
        self._reporting = self._report.start()
        self._metering = asyncio.create_task(_refresh_pool_metrics())
        if self.credentials:
            self._following = asyncio.create_task(self.credentials.follow())

    async def within_redis_timeout(self, awaitable):
        """A Redis call of a request, given up after ``api_redis_timeout_seconds`` (then it
        raises TimeoutError): the caller carries on without Redis. asyncio.timeout, not
        wait_for: on Python 3.11 wait_for wraps the call in a task of its own, per request."""
        async with asyncio.timeout(self.settings.api_redis_timeout_seconds):
            return await awaitable

    async def redis_round(self, add_commands: Callable[[Pipeline], int]) -> list:
        """The replies of the commands ``add_commands`` puts on a pipeline (it returns how many),
        sent with the other requests' in one round trip, within the Redis timeout. A command
        refused raises its error here, to its own request only."""
        replies = await self.within_redis_timeout(self.redis_commands.submit(add_commands))
        if refused := next((reply for reply in replies if isinstance(reply, Exception)), None):
            raise refused
        return replies

    async def _pipelined(self, batch: Sequence[Callable[[Pipeline], int]]) -> list[list]:
        pipe = self.redis.pipeline(transaction=False)
        counts = [add_commands(pipe) for add_commands in batch]
        replies = await pipe.execute(raise_on_error=False)
        answers, at = [], 0
        for count in counts:
            answers.append(replies[at:at + count])
            at += count
        return answers

    async def stop(self) -> None:
        for task in (self._watch, self._metering, self._following):
            if task:
                task.cancel()
        if self._report and self._reporting:
            self._reporting.cancel()
            self._report.remove()
        if self.redis is not None:
            await self.redis.aclose()
        for pool in self._pools:
            metrics.forget_pool(pool)
            await pool.close()


async def _refresh_pool_metrics(every_seconds: float = 1.0) -> None:
    """This process's pool gauges, every second: a scrape reaches one API process, which reads
    its own pools then and its siblings' gauges from their files (``metrics.refresh_pools``)."""
    while True:
        metrics.refresh_pools()
        await asyncio.sleep(every_seconds)
