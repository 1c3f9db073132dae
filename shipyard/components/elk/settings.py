"""``SHIPYARD.logs``: central logs — the shipper on every host, the store, what is kept how long."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from shipyard.component import Strict


def heap_problem(heap_mb: int, memory_limit_mb: int, what: str) -> str | None:
    """Why a JVM heap does not fit its container (None: it does): the other half is the JVM's
    own and the filesystem cache's."""
    if heap_mb * 2 > memory_limit_mb:
        return (f"heap_mb ({heap_mb}) is more than half of memory_limit_mb ({memory_limit_mb}): {what}; raise "
                f"memory_limit_mb to {heap_mb * 2} or lower heap_mb")
    return None


class ElasticsearchSettings(Strict):
    """The store (official image source: Elasticsearch; local: the in-memory stand-in)."""

    nodes: int = Field(1, description="Elasticsearch nodes (3: a cluster that keeps a replica of each "
                                                "index and survives one node; official images only)")
    heap_mb: int = Field(1024, ge=256, le=31744, description="JVM heap of each node (ES_JAVA_OPTS -Xms/-Xmx); "
                                                             "at most half of memory_limit_mb")
    memory_limit_mb: int = Field(2048, ge=512, description="container memory limit of each node")

    @field_validator("nodes")
    @classmethod
    def _one_or_three(cls, value: int) -> int:
        # One node, or a cluster of three that keeps a quorum of masters and a replica of each
        # index when one is lost (two could not elect a master without the other).
        if value not in (1, 3):
            raise ValueError(f"{value} nodes: use 1 or 3")
        return value

    @model_validator(mode="after")
    def _heap_within_limit(self):
        problem = heap_problem(self.heap_mb, self.memory_limit_mb, "Elasticsearch needs the other half for the "
                                                                   "filesystem cache")
        if problem:
            raise ValueError(problem)
        return self


class KibanaSettings(Strict):
    """Kibana (official image source only): one instance on the observability group's first host."""

    enabled: bool = Field(True, description="run Kibana where the image source gives it ('official' only)")
    memory_limit_mb: int = Field(1024, ge=512, description="container memory limit")
    ready_timeout_s: int = Field(300, ge=30, le=3600, description="how long its setup job waits for Kibana to "
                                                                  "be available before it fails saying so")


class LogstashSettings(Strict):
    """Logstash between the shippers and the store (official image source only; off by default)."""

    enabled: bool = Field(False, description="the shippers send to Logstash, which writes to Elasticsearch from "
                                             "its persistent queue ('official' only; the parsing stays in the shipper)")
    heap_mb: int = Field(512, ge=256, le=31744, description="JVM heap (LS_JAVA_OPTS -Xms/-Xmx)")
    memory_limit_mb: int = Field(1536, ge=512, description="container memory limit")
    queue_max_mb: int = Field(1024, ge=64, description="the persistent queue's size on disk (queue.max_bytes); "
                                                       "when full, Logstash stops reading and the shippers buffer")

    @model_validator(mode="after")
    def _heap_within_limit(self):
        problem = heap_problem(self.heap_mb, self.memory_limit_mb, "Logstash needs the rest for its direct memory")
        if problem:
            raise ValueError(problem)
        return self


class LogsSettings(Strict):
    enabled: bool = Field(True, description="ship every container's logs to a central store (false: they stay in "
                                            "each engine's json-file, make logs / make trace read them there)")
    retention_days: int = Field(14, ge=1, le=3650, description="daily indices older than this are deleted "
                                                               "(the store's lifecycle policy)")
    buffer_max_mb: int = Field(512, ge=16, description="per host: what the shipper keeps on disk while the store "
                                                       "is away; beyond it, lines wait in the engine's own files")
    shipper_memory_limit_mb: int = Field(256, ge=64)
    store_retry_max_s: int = Field(30, ge=2, le=600, description="most seconds between two attempts of a shipper to "
                                                                 "reach the store while it is away (action.resumeIntervalMax)")
    stats_interval_s: int = Field(10, ge=1, le=300, description="seconds between two records of the shipper's counters "
                                                                "(impstats), which Prometheus scrapes")
    stand_in_memory_limit_mb: int = Field(1024, ge=128, description="the local image source's in-memory store")
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
    kibana: KibanaSettings = KibanaSettings()
    logstash: LogstashSettings = LogstashSettings()
