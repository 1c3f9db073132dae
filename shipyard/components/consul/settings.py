"""``SHIPYARD.consul``: the Consul servers holding the runtime configuration."""

from __future__ import annotations

from pydantic import Field, model_validator

from shipyard.component import Strict


class ConsulSettings(Strict):
    servers: int = Field(1, ge=1, le=7, description="Consul servers (raft voters): 1, or 3/5 for a quorum that survives a loss")
    datacenter: str = Field("dc1", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    memory_limit_mb: int = Field(128, ge=64)
    log_level: str = Field("warn", pattern=r"^(trace|debug|info|warn|err)$")

    @model_validator(mode="after")
    def _odd_quorum(self):
        if self.servers % 2 == 0:
            raise ValueError(f"{self.servers} servers tolerate no more failures than {self.servers - 1}; "
                             f"set consul.servers to an odd number (1, 3 or 5)")
        return self
