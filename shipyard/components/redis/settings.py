"""``SHIPYARD.redis``: the Redis master, its replicas and the Sentinels watching them."""

from __future__ import annotations

from pydantic import Field, model_validator

from shipyard.component import Strict


class RedisSettings(Strict):
    maxmemory_mb: int = Field(128, ge=16, description="maxmemory; the stream must fit, so policy is noeviction")
    memory_limit_mb: int = Field(256, ge=64)
    replicas: int = Field(1, ge=0, le=8, description="replicas of the master")
    sentinels: int = Field(3, ge=0, le=7, description="Sentinels watching the master (0 = none: clients use the master directly)")
    quorum: int = Field(2, ge=1, description="Sentinels that must agree the master is down")
    master_name: str = Field("tasks", pattern=r"^[a-z][a-z0-9_-]{0,30}$", description="name Sentinel monitors the master as")
    down_after_ms: int = Field(5000, ge=500, description="Sentinel: master unreachable this long counts as down")
    failover_timeout_ms: int = Field(30000, ge=1000)

    @model_validator(mode="after")
    def _quorum_reachable(self):
        if self.sentinels and self.quorum > self.sentinels:
            raise ValueError(f"quorum {self.quorum} can never be reached by {self.sentinels} sentinels; "
                             f"set redis.quorum to at most {self.sentinels} (a majority: {self.sentinels // 2 + 1})")
        return self
