"""``SHIPYARD.prometheus``: what Prometheus collects, how long it keeps it, and how long each
alert waits before it fires."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from shipyard.component import Strict


class AlertTimings(Strict):
    """How long a condition holds before its alert fires (Prometheus ``for``), in seconds.
    Short values belong in throw-away environments only (the ci inventory's e2e)."""

    target_down_s: int = Field(120, ge=0, le=86400, description="a scrape target failing before TargetDown")
    host_down_s: int = Field(120, ge=0, le=86400, description="every target of a host failing before HostDown")
    no_worker_s: int = Field(120, ge=0, le=86400, description="no worker answering before NoWorkerConsuming")
    no_free_slot_s: int = Field(600, ge=0, le=86400,
                                description="every worker slot busy before NoWorkerSlotFree (new tasks wait)")
    config_mismatch_s: int = Field(300, ge=0, le=86400,
                                   description="processes on different runtime configs before RuntimeConfigMismatch")
    config_rejected_window_s: int = Field(900, ge=60, le=86400,
                                          description="a rejected runtime config keeps RuntimeConfigRejected firing this long")
    oldest_queued_s: int = Field(300, ge=0, le=86400,
                                 description="the oldest queued task older than oldest_queued_task_max_s before "
                                             "OldestQueuedTaskTooOld")
    dead_tasks_window_s: int = Field(900, ge=60, le=86400,
                                     description="a task of a kind going dead keeps DeadTasksRising firing this long")
    replica_not_streaming_s: int = Field(60, ge=0, le=86400,
                                         description="a PostgreSQL node other than the primary not streaming from it "
                                                     "before PostgresReplicaNotStreaming")
    replica_lag_s: int = Field(120, ge=0, le=86400, description="a replica further behind than "
                                                                "postgres.replica_max_lag_mb before PostgresReplicaLagging")
    wal_archive_stalled_s: int = Field(120, ge=0, le=86400,
                                       description="the WAL archive not streaming (or far behind) before "
                                                   "PostgresWalArchiveStalled")
    sentinels_disagree_s: int = Field(60, ge=0, le=86400,
                                      description="Sentinels naming different masters before RedisSentinelsDisagree")
    consul_no_leader_s: int = Field(60, ge=0, le=86400,
                                    description="Consul's servers answering with none of them the leader before ConsulNoLeader")
    host_resource_s: int = Field(300, ge=0, le=86400,
                                 description="a host's disk or memory below its floor before HostDiskFull / HostMemoryLow")
    log_shipper_down_s: int = Field(120, ge=0, le=86400,
                                    description="a host's log shipper not answering (or its counters stale) before "
                                                "LogShipperDown")
    log_backlog_s: int = Field(300, ge=0, le=86400, description="a shipper's store queue fuller than "
                                                                "log_buffer_fill_max before LogShipperBacklog")
    log_store_unreachable_s: int = Field(120, ge=0, le=86400,
                                         description="a shipper failing to reach the log store before LogStoreUnreachable")
    log_lost_window_s: int = Field(900, ge=60, le=86400, description="a line discarded or refused by the store keeps "
                                                                     "LogShipperDiscarding / LogStoreRejecting firing this long")



# The bucket boundaries of the API's `http_request_duration_seconds`, in ms
# (services/taskplatform/metrics.py; tests/unit/test_monitoring.py checks they agree). A latency
# objective can only be judged at one of them: the histogram counts nothing in between.
LATENCY_BUCKETS_MS = (2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class PrometheusSettings(Strict):
    enabled: bool = Field(True, description="run Prometheus (false: nothing collects metrics or evaluates alerts)")
    scrape_interval_s: int = Field(15, ge=1, le=300, description="seconds between two scrapes of a target")
    evaluation_interval_s: int = Field(15, ge=1, le=300, description="seconds between two evaluations of the rules")
    retention_days: int = Field(15, ge=1, le=3650, description="days of samples kept")
    availability_objective: float = Field(0.999, gt=0.5, lt=1,
                                          description="share of API answers that are not 5xx (the SLO the burn-rate "
                                                      "alerts defend)")
    latency_objective: float = Field(0.99, gt=0.5, lt=1,
                                     description="share of API answers within latency_threshold_ms (the SLO the "
                                                 "latency burn-rate alerts defend)")
    latency_threshold_ms: int = Field(250, description="what the latency objective calls fast enough; one of the "
                                                       f"histogram's bucket boundaries {LATENCY_BUCKETS_MS}")
    oldest_queued_task_max_s: int = Field(300, ge=1, le=7 * 86400,
                                          description="seconds a queued task may wait for a worker before "
                                                      "OldestQueuedTaskTooOld")
    memory_limit_mb: int = Field(512, ge=128)
    host_memory_limit_mb: int = Field(256, ge=64, description="memory of each other host's own Prometheus "
                                                               "(its host's series for two hours)")
    host_disk_free_min: float = Field(0.10, gt=0, lt=1, description="share of a host filesystem that must stay free")
    host_memory_available_min: float = Field(0.10, gt=0, lt=1, description="share of a host's memory that must stay available")
    log_buffer_fill_max: float = Field(0.5, gt=0, lt=1, description="share of a log shipper's store queue (in memory, "
                                                                     "or on disk of logs.buffer_max_mb) before LogShipperBacklog")
    alerts: AlertTimings = AlertTimings()

    @field_validator("latency_threshold_ms")
    @classmethod
    def _a_bucket_boundary(cls, value: int) -> int:
        if value not in LATENCY_BUCKETS_MS:
            raise ValueError(f"latency_threshold_ms ({value}) is not a bucket boundary of the API's "
                             f"http_request_duration_seconds; use one of {', '.join(map(str, LATENCY_BUCKETS_MS))}")
        return value

    def latency_le(self) -> str:
        """The threshold as the `le` label of its bucket, as prometheus_client writes it (0.25, 1.0)."""
        return repr(self.latency_threshold_ms / 1000)

    @model_validator(mode="after")
    def _evaluation_not_slower_than_alerts(self):
        # Alerts are judged at each evaluation: one slower than a `for` makes that `for` meaningless.
        waits = [(v, k) for k, v in self.alerts.model_dump().items() if v > 0]
        if waits and self.evaluation_interval_s > min(waits)[0]:
            shortest, key = min(waits)
            raise ValueError(f"evaluation_interval_s ({self.evaluation_interval_s}) is longer than alerts.{key} "
                             f"({shortest}); lower evaluation_interval_s or raise alerts.{key}")
        return self
