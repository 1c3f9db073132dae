"""Runtime config: a validated model, and config sources that hot-reload it.

A ``ConfigSource`` holds the current config and swaps it atomically when a new valid one
arrives; an invalid one is rejected (logged and counted) and the old one stays. Its watch
runs supervised (``supervise``): an error is logged with its traceback, counted, shown in
``reload_state`` and the watch restarted after a backoff, so one failure does not end hot
reload. The file source polls a path (the deploy replaces the file by rename, so inotify on
the inode would miss it); a Consul KV source will implement the same interface with blocking
queries, raising when Consul cannot be reached.
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskplatform import kinds

# A timeout is a bound on one attempt; a day is far beyond any kind we run, and catches a unit
# mistake (milliseconds given as seconds) before it makes hung attempts last for ever.
TimeoutSeconds = Annotated[float, Field(gt=0, le=86_400)]
# How long a finished task is kept: a minute at least (a client polling for the outcome must
# see it), ten years at most (a unit mistake, milliseconds for seconds, would keep it for ages).
RetentionSeconds = Annotated[float, Field(ge=60, le=315_360_000)]
# The most ``batch_max_tasks`` may say: a batch is one transaction, and one of a thousand tasks
# holds its locks (and its request's slot) for a moment already.
BATCH_MAX_TASKS_BOUND = 1000

log = logging.getLogger("taskplatform.config")


class QueueSettings(BaseModel):
    """One queue's limits: its concurrency per worker (each worker's own slots, so the cluster's
    bound is the value times the workers), its rate over the cluster (one bucket in Redis that
    every worker takes its starts from, ``queue_rate``). Left out: the worker's default
    (``worker_concurrency`` slots, no rate limit)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Attempts of this queue a worker runs at once: slots of its own, which no other queue's
    # tasks take.
    concurrency: int | None = Field(None, ge=1, le=256)
    # Attempts of this queue all workers together start per second at most (a bucket holding a
    # tenth of a second's worth, at least one: a short burst, never a second's worth at once).
    # The bound catches a unit mistake (per minute given as per second) only loosely: 10000/s.
    rate_per_second: float | None = Field(None, gt=0, le=10_000)


class RuntimeConfig(BaseModel):
    # Keys this release does not know are left out, not refused: during a release two versions
    # run side by side on one document, and a key only the newer one knows must not make the
    # older one reject all of it. The deploy refuses unknown keys before it writes a document
    # (``validate_document``), so a typo never gets this far.
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str = Field(min_length=1, max_length=64)
    rate_limit_per_minute: int = Field(gt=0)
    worker_concurrency: int = Field(ge=1, le=256)
    task_max_attempts: int = Field(ge=1, le=100)
    retry_base_seconds: float = Field(gt=0)
    retry_max_seconds: float = Field(gt=0)
    reconcile_after_seconds: float = Field(gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    # Optional (with defaults), so configs written before they existed stay valid. An attempt
    # running longer is cancelled and counted as a failure: a hung task cannot hold its slot
    # (and its lease) for ever.
    task_timeout_seconds: TimeoutSeconds = 300.0
    task_timeout_seconds_by_kind: dict[str, TimeoutSeconds] = Field(default_factory=dict)
    # The switches of an incident, optional like the timeouts. In maintenance the API refuses
    # writes (503 ``maintenance`` with this Retry-After); reads, health and the workers go on.
    # The bound catches milliseconds given as seconds: clients would wait for hours.
    maintenance: bool = False
    maintenance_retry_after_seconds: int = Field(30, ge=1, le=3600)
    # The kinds the API accepts and the workers run; None: every kind of the release, so a kind
    # a later release adds is on without a config change. A name this release does not know is
    # kept, not refused, by the same rule as unknown keys: it may be a newer release's kind
    # (``validate_document`` refuses it before a push).
    enabled_kinds: list[str] | None = None
    # Finished tasks (succeeded, dead, cancelled) are deleted this long after they finished;
    # None: kept. A tenant's period overrides its kinds', a kind's the default.
    retention_seconds: RetentionSeconds | None = None
    retention_seconds_by_kind: dict[str, RetentionSeconds] = Field(default_factory=dict)
    retention_seconds_by_tenant: dict[str, RetentionSeconds] = Field(default_factory=dict)
    # Webhooks (``webhooks``, ``webhook_dispatch``): a failed delivery is tried again after
    # min(max, base · 2^(attempt−1)) seconds with full jitter, at most ``webhook_max_attempts``
    # times; each attempt (DNS, connect, send, the status line) has ``webhook_timeout_seconds``;
    # a worker sends at most ``webhook_concurrency`` at once, beside its task slots. Private,
    # loopback and link-local receivers are refused unless ``webhook_allow_private_addresses``
    # (an environment whose receivers are on its own network; the tests' loopback receiver).
    webhook_max_attempts: int = Field(8, ge=1, le=50)
    webhook_retry_base_seconds: float = Field(10.0, gt=0, le=86_400)
    webhook_retry_max_seconds: float = Field(3600.0, gt=0, le=86_400)
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)
    webhook_concurrency: int = Field(16, ge=1, le=256)
    webhook_allow_private_addresses: bool = False
    # CIDRs every receiver address must lie in (empty: no such limit): an environment that
    # delivers only to its own receivers (ci: its tests' receiver, never a URL a fuzzer made up).
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    # Finished deliveries (succeeded, failed) and their attempts' log are deleted this long after
    # they finished, by the workers' retention pass as finished tasks are; None: kept.
    webhook_delivery_retention_seconds: RetentionSeconds | None = None
    # The most tasks one ``POST /v1/tasks:batch`` creates (beyond: 400 ``batch_too_large``). The
    # OpenAPI states the bound of this key (``BATCH_MAX_TASKS_BOUND``), not its value: the
    # document is built once, the key is live.
    batch_max_tasks: int = Field(100, ge=1, le=BATCH_MAX_TASKS_BOUND)
    # Schedules: the most one tenant may have, paused ones too (one more: 409
    # ``schedule_limit_reached``), and the shortest spacing of a schedule's occurrences (an
    # ``interval_seconds`` below it, or a cron expression firing more often: 400
    # ``schedule_too_frequent``): a schedule firing every second was once found flooding the
    # workers. Checked at create: schedules made before a lowered limit stay and fire.
    schedules_max_per_tenant: int = Field(100, ge=1, le=100_000)
    schedule_min_interval_seconds: int = Field(60, ge=1, le=86_400)
    # Per queue (the queue a kind declares): its concurrency per worker and its rate limit over
    # the cluster (``queue_rate``). A queue
    # this release does not know is kept, not refused, by the rule of unknown keys (a newer
    # release beside it may declare it); ``validate_document`` refuses it before a push.
    queues: dict[str, QueueSettings] = Field(default_factory=dict)

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net)
            except ValueError as exc:
                raise ValueError(f"webhook_allowed_networks: {net!r} is not a network ({exc})") from None
        return value

    @field_validator("task_timeout_seconds_by_kind", "retention_seconds_by_kind")
    @classmethod
    def _known_kinds(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(kinds.names()))
        if unknown:  # a typo would silently fall back to the default timeout
            raise ValueError(f"unknown task kinds {unknown}; known: {kinds.names()}")
        return value

    def retains(self) -> bool:
        """Whether any finished task is ever deleted."""
        return bool(self.retention_seconds or self.retention_seconds_by_kind or self.retention_seconds_by_tenant)

    def concurrency_of(self, queue: str) -> int:
        """Slots of ``queue`` in one worker: its own setting, else ``worker_concurrency``."""
        settings = self.queues.get(queue)
        return settings.concurrency if settings and settings.concurrency else self.worker_concurrency

    def rate_of(self, queue: str) -> float | None:
        """Attempts of ``queue`` the workers together start per second at most; None: no limit."""
        settings = self.queues.get(queue)
        return settings.rate_per_second if settings else None

    def timeout_for(self, kind: str) -> float:
        return self.task_timeout_seconds_by_kind.get(kind, self.task_timeout_seconds)

    def runnable_kinds(self) -> list[str]:
        """The kinds of this release that are enabled."""
        if self.enabled_kinds is None:
            return kinds.names()
        return [kind for kind in kinds.names() if kind in self.enabled_kinds]

    def switches(self) -> dict:
        """The operator's switches as this process applies them (the kinds resolved)."""
        return {"maintenance": self.maintenance, "enabled_kinds": self.runnable_kinds()}


@dataclass(frozen=True)
class LoadedConfig:
    config: RuntimeConfig
    hash: str  # sha256 of the raw document, so the deploy side can prove what was applied
    ignored: tuple[str, ...] = ()  # keys of the document this release does not know


class ConfigRejected(ValueError):
    pass


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors())


def parse_config(raw: bytes) -> LoadedConfig:
    try:
        doc = json.loads(raw)
        config = RuntimeConfig.model_validate(doc)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigRejected(f"not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise ConfigRejected(_problems(exc)) from None
    ignored = tuple(sorted(set(doc) - set(RuntimeConfig.model_fields)))
    return LoadedConfig(config, hashlib.sha256(raw).hexdigest()[:16], ignored)


def validate_document(doc: dict) -> RuntimeConfig:
    """The deploy's check before it writes a document: what an instance would apply, and no key
    this release does not know (a typo would otherwise be ignored by every instance)."""
    unknown = sorted(set(doc) - set(RuntimeConfig.model_fields))
    if unknown:
        raise ConfigRejected(f"unknown keys {unknown}; known: {sorted(RuntimeConfig.model_fields)}")
    try:
        config = RuntimeConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigRejected(_problems(exc)) from None
    unknown_kinds = sorted(set(config.enabled_kinds or ()) - set(kinds.names()))
    if unknown_kinds:  # a typo would silently disable the kind it meant
        raise ConfigRejected(f"enabled_kinds: unknown task kinds {unknown_kinds}; known: {kinds.names()}")
    unknown_queues = sorted(set(config.queues) - set(kinds.queues()))
    if unknown_queues:  # a typo would silently leave the queue it meant unlimited
        raise ConfigRejected(f"queues: unknown queues {unknown_queues}; the kinds declare: {kinds.queues()}")
    return config


# Watch restarts after an error: 0.5 s, doubling up to 30 s while it keeps failing.
WATCH_BACKOFF_SECONDS = (0.5, 30.0)


class ConfigSource(abc.ABC):
    """Current runtime config + a watch loop. Listeners run after each applied reload."""

    def __init__(self) -> None:
        self._current: LoadedConfig | None = None
        self._listeners: list[Callable[[LoadedConfig], None]] = []
        self.on_reload: Callable[[], None] = lambda: None
        self.on_reject: Callable[[], None] = lambda: None
        self.on_watch_error: Callable[[], None] = lambda: None
        self._applied_at: float | None = None
        self._rejected: dict | None = None  # the newest version rejected since the last applied
        self._failing_since: float | None = None  # the source has not been read since: maybe stale
        self._failures = 0  # in a row
        self._last_error: str | None = None

    def reload_state(self) -> dict:
        """Hot reload as an operator needs it: when the current config was applied, the newest
        version rejected after it (with why), and whether the source can be read now."""
        return {"applied_at": self._applied_at, "rejected": self._rejected,
                "watch": {"state": "failing" if self._failing_since else "ok", "failing_since": self._failing_since,
                          "failures_in_a_row": self._failures, "last_error": self._last_error}}

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def current(self) -> LoadedConfig:
        if self._current is None:
            raise RuntimeError("runtime config not loaded")
        return self._current

    @property
    def config(self) -> RuntimeConfig:
        return self.current().config

    def subscribe(self, listener: Callable[[LoadedConfig], None]) -> None:
        self._listeners.append(listener)

    def offer(self, raw: bytes, origin: str) -> bool:
        """Validate ``raw`` and swap it in; on rejection keep the old config. True if applied."""
        try:
            new = parse_config(raw)
        except ConfigRejected as exc:
            self.on_reject()
            self._rejected = {"at": time.time(), "reason": str(exc), "hash": hashlib.sha256(raw).hexdigest()[:16]}
            log.error("runtime config rejected; keeping the current one", extra={
                "origin": origin, "reason": str(exc),
                "kept_version": self._current.config.version if self._current else None})
            return False
        if self._current is not None and new.hash == self._current.hash:
            return False
        first = self._current is None
        self._current = new  # one reference swap: readers see the old or the new, never a mix
        self._applied_at, self._rejected = time.time(), None
        if not first:
            self.on_reload()
        log.info("runtime config applied", extra={"origin": origin, "version": new.config.version,
                                                   "hash": new.hash, "ignored_keys": list(new.ignored)})
        for listener in self._listeners:
            try:
                listener(new)
            except Exception:  # noqa: BLE001 - the config is applied; the other listeners still run
                self.on_watch_error()
                log.exception("runtime config listener failed", extra={"listener": repr(listener)})
        return True

    def source_read(self) -> None:
        """For the sources: the source was just read (whatever it held): not stale any more."""
        if self._failing_since is not None:
            log.info("runtime config source readable again", extra={"failing_since": self._failing_since})
        self._failing_since, self._failures, self._last_error = None, 0, None

    def source_failed(self, exc: BaseException) -> None:
        """For the sources that retry by themselves (and for ``supervise``): a read failed; the
        applied config stays, the state says since when it may be stale and why."""
        self._failures += 1
        self._failing_since = self._failing_since or time.time()
        self._last_error = f"{exc.__class__.__name__}: {exc}"[:500]
        self.on_watch_error()

    async def supervise(self) -> None:
        """Run ``watch`` for ever. An error is logged with its traceback, counted
        (``on_watch_error``), shown in ``reload_state`` and the watch restarted after a backoff;
        the applied config stays meanwhile."""
        base, cap = WATCH_BACKOFF_SECONDS
        while True:
            try:
                await self.watch()
                raise RuntimeError("the watch returned")  # it must run for ever
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever it is, hot reload must go on
                self.source_failed(exc)
                delay = min(cap, base * 2 ** (self._failures - 1))
                log.exception("runtime config watch failed; retrying",
                              extra={"retry_in_s": delay, "failures_in_a_row": self._failures})
            await asyncio.sleep(delay)

    @abc.abstractmethod
    def load_initial(self) -> None:
        """Load synchronously at start; raise if nothing valid is available."""

    @abc.abstractmethod
    async def watch(self) -> None:
        """Run forever, offering each new version and calling ``source_read`` after each read
        of the source; raise when the source cannot be read (``supervise`` retries)."""


class FileConfigSource(ConfigSource):
    def __init__(self, path: str | Path, poll_seconds: float = 1.0):
        super().__init__()
        self.path = Path(path)
        self.poll_seconds = poll_seconds
        self._last_raw: bytes | None = None

    def load_initial(self) -> None:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise RuntimeError(f"no runtime config at {self.path}: {exc.strerror}") from None
        if not self.offer(raw, str(self.path)):
            raise RuntimeError(f"no valid runtime config at {self.path}")
        self._last_raw = raw

    def poll_once(self) -> None:
        raw = self.path.read_bytes()  # an OSError is the supervisor's: logged, counted, retried
        self.source_read()
        if raw != self._last_raw:
            self._last_raw = raw  # a rejected version is reported once, not every poll
            self.offer(raw, str(self.path))

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            self.poll_once()
