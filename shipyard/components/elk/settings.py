"""``SHIPYARD.logs``: central logs — the shipper on every host, the store, what is kept how long."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shipyard.component import Strict


class ElasticsearchSettings(Strict):
    """The store (official image source: Elasticsearch; local: the in-memory stand-in)."""

    nodes: Literal[1, 3] = Field(1, description="Elasticsearch nodes (3: a cluster that keeps a replica of each "
                                                "index and survives one node; official images only)")
    heap_mb: int = Field(1024, ge=256, le=31744, description="JVM heap of each node (ES_JAVA_OPTS -Xms/-Xmx); "
                                                             "at most half of memory_limit_mb")
    memory_limit_mb: int = Field(2048, ge=512, description="container memory limit of each node")

    @model_validator(mode="after")
    def _heap_within_limit(self):
        if self.heap_mb * 2 > self.memory_limit_mb:
            raise ValueError(f"heap_mb ({self.heap_mb}) is more than half of memory_limit_mb ({self.memory_limit_mb}): "
                             "Elasticsearch needs the other half for the filesystem cache; raise memory_limit_mb "
                             f"to {self.heap_mb * 2} or lower heap_mb")
        return self


class LogsSettings(Strict):
    enabled: bool = Field(True, description="ship every container's logs to a central store (false: they stay in "
                                            "each engine's json-file, make logs / make trace read them there)")
    retention_days: int = Field(14, ge=1, le=3650, description="daily indices older than this are deleted "
                                                               "(the store's lifecycle policy)")
    buffer_max_mb: int = Field(512, ge=16, description="per host: what the shipper keeps on disk while the store "
                                                       "is away; beyond it, lines wait in the engine's own files")
    shipper_memory_limit_mb: int = Field(256, ge=64)
    stand_in_memory_limit_mb: int = Field(1024, ge=128, description="the local image source's in-memory store")
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()
