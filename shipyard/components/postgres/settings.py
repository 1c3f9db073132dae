"""``SHIPYARD.postgres``: the PostgreSQL primary, its streaming replicas and backups."""

from __future__ import annotations

from pydantic import Field

from shipyard.component import Strict

_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class PostgresSettings(Strict):
    database: str = Field("tasks", pattern=_IDENT, description="database name (lower-case identifier)")
    user: str = Field("tasks", pattern=_IDENT, description="owner role of the database (lower-case identifier)")
    max_connections: int = Field(100, ge=10, le=5000)
    shared_buffers_mb: int = Field(128, ge=16, le=65536)
    memory_limit_mb: int = Field(512, ge=128)
    replicas: int = Field(1, ge=0, le=8, description="streaming replicas (0 = primary only)")
    max_slot_wal_keep_size_mb: int = Field(1024, ge=64,
                                           description="WAL a replication slot may hold back before the replica is cut off")
    replica_max_lag_mb: int = Field(16, ge=1, description="a replica further behind than this is unhealthy")
    backup_interval_s: int = Field(3600, ge=60, description="seconds between scheduled base backups")
    backup_keep: int = Field(3, ge=1, le=100, description="base backups kept (older ones are deleted)")
