"""Prometheus metrics. The API runs several uvicorn processes: when PROMETHEUS_MULTIPROC_DIR
is set (by `taskplatform api`, before this import) the values are aggregated across them."""

from __future__ import annotations

import os

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess)
from prometheus_client.core import GaugeMetricFamily

REQUEST_LATENCY = Histogram("http_request_duration_seconds", "API request latency", ["route"],
                            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REQUESTS = Counter("http_requests_total", "API requests", ["route", "status"])
TASKS_CREATED = Counter("tasks_created_total", "tasks accepted by the API")
TASKS_ENQUEUE_FAILED = Counter("tasks_enqueue_failed_total", "tasks committed but not enqueued (reconciler will)")
TASKS_COMPLETED = Counter("tasks_completed_total", "tasks a worker completed")
TASKS_FAILED = Counter("tasks_failed_total", "task attempts that failed (will retry)")
TASKS_DEAD = Counter("tasks_dead_total", "tasks that failed their last attempt")
TASKS_TIMED_OUT = Counter("tasks_timed_out_total", "task attempts cancelled for running past their timeout")
TASKS_RECOVERED = Counter("tasks_recovered_total", "tasks a worker took from PostgreSQL, not from the stream",
                          ["reason"])
CONSUMERS_FORGOTTEN = Counter("queue_consumers_removed_total", "idle consumers without pending entries removed "
                                                               "from the group")
CONFIG_RELOADS = Counter("config_reloads_total", "runtime config versions applied after start")
CONFIG_REJECTIONS = Counter("config_rejections_total", "runtime config versions rejected as invalid")
CONFIG_WATCH_ERRORS = Counter("config_watch_errors_total", "errors watching or applying the runtime config "
                                                            "(logged with a traceback; the watch is retried)")
CONFIG_VERSION = Gauge("config_version_info", "applied runtime config (value 1)", ["version", "hash"],
                       multiprocess_mode="liveall")


def set_config_version(version: str, digest: str) -> None:
    CONFIG_VERSION.clear()
    CONFIG_VERSION.labels(version=version, hash=digest).set(1)


def exposition(live: dict[str, dict[tuple[tuple[str, str], ...], float]] | None = None) -> bytes:
    """Text exposition: process metrics (aggregated when multiprocess) + live gauges read now."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY
        text = generate_latest(REGISTRY)
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
