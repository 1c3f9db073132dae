"""Prometheus metrics, kept as the processes run: a scrape reads them and asks nothing of
PostgreSQL. The API runs several uvicorn processes: when PROMETHEUS_MULTIPROC_DIR is set (by
`taskplatform api`, before this import) the values are aggregated across them."""

from __future__ import annotations

import os

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess)
from prometheus_client.core import GaugeMetricFamily

from taskplatform import kinds

REQUEST_LATENCY = Histogram("http_request_duration_seconds", "API request latency", ["route"],
                            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REQUESTS = Counter("http_requests_total", "API requests", ["route", "status"])
# By kind: a known, small set (the kinds this process loaded; anything else is "other", see kind_label).
TASKS_CREATED = Counter("tasks_created_total", "tasks accepted by the API", ["kind"])
TASKS_ENQUEUE_FAILED = Counter("tasks_enqueue_failed_total", "tasks committed but not enqueued (reconciler will)")
TASKS_COMPLETED = Counter("tasks_completed_total", "tasks a worker completed", ["kind"])
TASKS_FAILED = Counter("tasks_failed_total", "task attempts that failed (will retry)", ["kind"])
TASKS_DEAD = Counter("tasks_dead_total", "tasks that failed their last attempt", ["kind"])
SCHEDULES_FIRED = Counter("schedules_fired_total", "tasks created by schedules, one per occurrence fired", ["kind"])
SCHEDULE_OCCURRENCES_SKIPPED = Counter("schedule_occurrences_skipped_total", "occurrences missed while no worker "
                                       "fired and not fired, by the schedule's catch-up policy", ["catchup"])
TASKS_DELETED = Counter("tasks_deleted_total", "finished tasks deleted by retention", ["kind"])
# Webhook delivery attempts by outcome: succeeded (2xx), retrying (failed, another attempt will
# come), failed (the last attempt failed: the delivery is given up until redelivered by hand).
WEBHOOK_OUTCOMES = ("succeeded", "retrying", "failed")
WEBHOOK_DELIVERIES = Counter("webhook_deliveries_total", "webhook delivery attempts by outcome", ["outcome"])
WEBHOOK_DELIVERIES_DELETED = Counter("webhook_deliveries_deleted_total", "finished webhook deliveries deleted by "
                                                                       "retention (with their attempts' log)")
WEBHOOKS_IN_FLIGHT = Gauge("webhook_deliveries_in_flight", "webhook deliveries this worker is sending",
                           multiprocess_mode="livesum")
TASKS_TIMED_OUT = Counter("tasks_timed_out_total", "task attempts cancelled for running past their timeout")
TASKS_RECOVERED = Counter("tasks_recovered_total", "tasks a worker took from PostgreSQL, not from the stream",
                          ["reason"])
CONSUMERS_FORGOTTEN = Counter("queue_consumers_removed_total", "idle consumers without pending entries removed "
                                                               "from the group")
CONFIG_RELOADS = Counter("config_reloads_total", "runtime config versions applied after start")
CONFIG_REJECTIONS = Counter("config_rejections_total", "runtime config versions rejected as invalid")
CONFIG_WATCH_ERRORS = Counter("config_watch_errors_total", "errors watching or applying the runtime config "
                                                            "(logged with a traceback; the watch is retried)")
TASKS_RUNNING = Gauge("worker_tasks_running", "task attempts running in this worker", multiprocess_mode="livesum")
# Read at each scrape from the applied runtime config (worker_concurrency): busy over total slots.
WORKER_SLOTS = Gauge("worker_slots", "task attempts this worker may run at once (runtime config worker_concurrency)",
                     multiprocess_mode="livesum")
# Per queue (the queues the worker's kinds declare, each at 0 from the start): a queue's own
# slots (runtime config ``queues``, else worker_concurrency) and the attempts running in them.
QUEUE_SLOTS = Gauge("worker_queue_slots", "task attempts of this queue this worker may run at once", ["queue"],
                    multiprocess_mode="livesum")
QUEUE_RUNNING = Gauge("worker_queue_running", "task attempts of this queue running in this worker", ["queue"],
                      multiprocess_mode="livesum")
TASK_RUN_SECONDS = Histogram("task_run_seconds", "time an attempt's body ran (until its outcome or timeout)",
                             ["kind"], buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600))
TASK_QUEUE_WAIT_SECONDS = Histogram("task_queue_wait_seconds", "time from a task's creation to its first claim",
                                    ["kind"], buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900))
# The highest of the live processes: 1 as soon as one of them applies maintenance (a reload
# reaches the processes one by one).
MAINTENANCE_MODE = Gauge("maintenance_mode", "1 while the applied runtime config has maintenance on "
                                             "(the API refuses writes)", multiprocess_mode="livemax")
# Read from the PostgreSQL pools of the process at each scrape (``watch_pool``); summed over
# the API's processes and, within a process, over its pools (the primary's and a replica's).
DB_POOL_CONNECTIONS = Gauge("db_pool_connections", "PostgreSQL connections of this process's pools, in use by a "
                                                   "query or idle", ["state"], multiprocess_mode="livesum")
DB_POOL_WAITING = Gauge("db_pool_waiting", "queries waiting for a PostgreSQL connection of this process's pools",
                        multiprocess_mode="livesum")
DB_POOL_MAX = Gauge("db_pool_max", "the most PostgreSQL connections this process's pools may open",
                    multiprocess_mode="livesum")
# Vault (``taskplatform.db_credentials``): each failed call of the credential keeper, by what it
# tried (login, renew_token, renew_lease, credentials, kv); what is held is kept meanwhile.
VAULT_ERRORS = Counter("vault_errors_total", "Vault calls of the credential keeper that failed (unreachable, "
                                             "sealed, refused)", ["operation"])
DB_CREDENTIALS_EXPIRY = Gauge("db_credentials_expiry_timestamp_seconds", "when the PostgreSQL credentials' Vault "
                                                                          "lease ends, as last renewed",
                              multiprocess_mode="livemax")
RELEASE_INFO = Gauge("release_info", "the release this process runs (value 1): its colour (none outside "
                                     "blue-green) and build version", ["colour", "version"],
                     multiprocess_mode="livemax")
CONFIG_VERSION_NAME = "config_version_info"
CONFIG_VERSION = Gauge(CONFIG_VERSION_NAME, "applied runtime config (value 1)", ["version", "hash"],
                       multiprocess_mode="liveall")
_applied_config: tuple[str, str] | None = None


def set_config_version(version: str, digest: str) -> None:
    """One series per process, the config it applies now. prometheus_client cannot remove a
    label set in multiprocess mode (its value stays in the process's file, and ``clear`` does
    nothing there): the old one is set to 0, and series at 0 are left out of the exposition."""
    global _applied_config
    if _applied_config not in (None, (version, digest)):
        CONFIG_VERSION.labels(*_applied_config).set(0)
    CONFIG_VERSION.labels(version=version, hash=digest).set(1)
    _applied_config = (version, digest)


def kind_label(kind: str) -> str:
    """A task's kind as a label value: one of the known kinds, else "other" (a row of a newer
    release's kind), so that no row can add series."""
    return kind if kind in kinds.registry() else "other"


def count_kinds(*counters: Counter) -> None:
    """Every known kind's series at 0 from the start: ``increase`` sees the first task of a kind
    (a series born at 1 shows no increase)."""
    for counter in counters:
        for kind in (*kinds.registry(), "other"):
            counter.labels(kind=kind)


def set_release(colour: str, version: str) -> None:
    RELEASE_INFO.labels(colour=colour or "none", version=version).set(1)


_pools: list = []


def watch_pool(pool) -> None:
    """Export ``pool`` (anything with ``state()`` → (in use, idle, waiting, max)) as the
    db_pool_* gauges, read at each scrape (``refresh_pools``) until ``forget_pool``."""
    _pools.append(pool)


def forget_pool(pool) -> None:
    if pool in _pools:
        _pools.remove(pool)
    refresh_pools()


def refresh_pools() -> None:
    """The db_pool_* gauges from this process's pools now. At each scrape of the process that
    answers it; an API process also calls it every second, so that its siblings' values, read
    from their files, are as fresh."""
    in_use = idle = waiting = most = 0
    for pool in list(_pools):
        state = pool.state()
        in_use, idle, waiting, most = in_use + state[0], idle + state[1], waiting + state[2], most + state[3]
    DB_POOL_CONNECTIONS.labels(state="in_use").set(in_use)
    DB_POOL_CONNECTIONS.labels(state="idle").set(idle)
    DB_POOL_WAITING.set(waiting)
    DB_POOL_MAX.set(most)


class QueueStats:
    """The queue as PostgreSQL last said (a worker refreshes it every few seconds, ``Worker``):
    a scrape reads these and asks nothing. Nothing is exported before the first answer nor
    after a failed one (``clear``): a value PostgreSQL no longer vouches for is not shown."""

    def __init__(self):
        self.values: tuple[int, float] | None = None
        self.by_queue: dict[str, tuple[int, float]] = {}

    def set(self, queued: int, oldest_seconds: float) -> None:
        self.values = (queued, oldest_seconds)

    def set_by_queue(self, by_queue: dict[str, tuple[int, float]]) -> None:
        """(queued, oldest wait) per queue; every queue of the worker's kinds given, at 0 when empty."""
        self.by_queue = dict(by_queue)

    def clear(self) -> None:
        self.values = None
        self.by_queue = {}

    def collect(self):
        if self.values is None:
            return
        note = " (every worker exports the same: use max())"
        yield GaugeMetricFamily("tasks_queued", "tasks waiting for a worker, not yet claimed" + note,
                                value=self.values[0])
        yield GaugeMetricFamily("tasks_oldest_queued_age_seconds", "seconds the oldest queued task has waited since "
                                "it was last queued, 0 when none" + note, value=self.values[1])
        if self.by_queue:
            queued = GaugeMetricFamily("queue_tasks_queued", "tasks of this queue waiting for a worker" + note,
                                       labels=["queue"])
            oldest = GaugeMetricFamily("queue_oldest_queued_age_seconds", "seconds the oldest queued task of this "
                                       "queue has waited, 0 when none" + note, labels=["queue"])
            for name, (count, age) in sorted(self.by_queue.items()):
                queued.add_metric([name], count)
                oldest.add_metric([name], age)
            yield queued
            yield oldest


QUEUE = QueueStats()


class _WithoutReplacedConfigs:
    """The process metrics (aggregated when multiprocess), without config versions replaced."""

    def __init__(self):
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            self.source = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.source)
        else:
            from prometheus_client import REGISTRY
            self.source = REGISTRY

    def collect(self):
        refresh_pools()  # before the files are read: this process's own pools as of now
        for family in self.source.collect():
            if family.name == CONFIG_VERSION_NAME:
                family.samples = [sample for sample in family.samples if sample.value != 0]
            yield family


def exposed_registry(queue: QueueStats | None = None) -> CollectorRegistry:
    """What a scrape of this process gets (the worker's metrics server serves it as is, with
    the ``queue`` it refreshes)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_WithoutReplacedConfigs())
    if queue is not None:
        registry.register(queue)
    return registry


def exposition(live: dict[str, dict[tuple[tuple[str, str], ...], float]] | None = None) -> bytes:
    """Text exposition: process metrics (aggregated when multiprocess) + live gauges read now."""
    text = generate_latest(exposed_registry())
    if live:
        extra = CollectorRegistry()
        extra.register(_LiveCollector(live))
        text += generate_latest(extra)
    return text


class _LiveCollector:
    def __init__(self, live):
        self.live = live

    def collect(self):
        for name, samples in self.live.items():
            labels = sorted({k for key in samples for k, _ in key})
            family = GaugeMetricFamily(name, name.replace("_", " "), labels=labels)
            for key, value in samples.items():
                family.add_metric([dict(key)[label] for label in labels], value)
            yield family
