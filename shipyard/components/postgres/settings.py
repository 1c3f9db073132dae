"""``SHIPYARD.postgres``: PostgreSQL under Patroni, its replicas and backups."""

from __future__ import annotations

from pydantic import Field, model_validator

from shipyard.component import Strict

_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class PatroniSettings(Strict):
    """How Patroni decides a failover (docs/data-tier.md).
    The defaults aim at a failover within 15 s: the leader's key in etcd lives ``ttl_s``, so a
    dead leader is replaced about ``ttl_s`` after its last renewal."""

    ttl_s: int = Field(10, ge=5, le=300, description="lifetime of the leader key: a dead leader is replaced after about this")
    loop_wait_s: int = Field(2, ge=1, le=60, description="seconds between the runs of each node's HA loop")
    retry_timeout_s: int = Field(4, ge=1, le=60,
                                 description="a DCS or PostgreSQL call failing this long makes the leader step down")
    synchronous: bool = Field(False, description="synchronous_mode: a commit is acknowledged once a replica has it, and "
                                                 "only that replica may be promoted (no acknowledged transaction lost)")
    failsafe: bool = Field(True, description="failsafe_mode: with the DCS unreachable, the leader stays primary as long "
                                             "as every member answers it (no outage when etcd alone fails); a leader "
                                             "cut off from its members as well demotes itself")
    maximum_lag_on_failover_mb: int = Field(1, ge=0, description="a replica further behind than this is never promoted")

    @model_validator(mode="after")
    def _leader_renews_in_time(self):
        # Patroni's own rule: a leader must be able to retry its DCS calls twice and still renew
        # its key before the key expires, or a slow DCS alone makes it lose the lock.
        needed = self.loop_wait_s + 2 * self.retry_timeout_s
        if needed > self.ttl_s:
            raise ValueError(f"postgres.patroni: loop_wait_s + 2 * retry_timeout_s = {needed} exceeds ttl_s "
                             f"({self.ttl_s}); Patroni requires loop_wait + 2 * retry_timeout <= ttl: raise ttl_s "
                             f"to {needed} or lower loop_wait_s / retry_timeout_s")
        return self


class PostgresSettings(Strict):
    """PostgreSQL under Patroni: ``postgres`` and ``replicas`` more nodes, etcd as the DCS,
    pgBackRest for backups (docs/data-tier.md)."""

    retired = {"ha": ("Patroni is the only way PostgreSQL runs now (etcd as its DCS, pgBackRest for backups); "
                      "the home-made 'scripts' mode and the choice between the two are gone",
                      "nothing replaces it (an environment deployed under ha: scripts keeps none of its PostgreSQL "
                      "data through the switch: docs/data-tier.md, \"Leaving the scripts mode\")")}
    database: str = Field("tasks", pattern=_IDENT, description="database name (lower-case identifier)")
    user: str = Field("tasks", pattern=_IDENT, description="owner role of the database (lower-case identifier)")
    max_connections: int = Field(100, ge=10, le=5000)
    shared_buffers_mb: int = Field(128, ge=16, le=65536)
    memory_limit_mb: int = Field(512, ge=128)
    replicas: int = Field(1, ge=0, le=8, description="streaming replicas (0 = primary only)")
    max_slot_wal_keep_size_mb: int = Field(1024, ge=64,
                                           description="WAL a replication slot may hold back before the replica is cut off")
    replica_max_lag_mb: int = Field(16, ge=1, description="a replica further behind than this is unhealthy")
    backup_interval_s: int = Field(3600, ge=60, description="a scheduled pgBackRest backup is taken when the newest "
                                                            "is older than this many seconds")
    backup_keep: int = Field(3, ge=1, le=100, description="full backups kept, with their incrementals and WAL "
                                                          "(pgBackRest's repo1-retention-full)")
    backup_full_interval_s: int = Field(604800, ge=60,
                                        description="a scheduled backup is full when the newest full one is older "
                                                    "than this, incremental otherwise")
    backup_processes: int = Field(2, ge=1, le=32, description="pgBackRest's process-max (parallel compression and "
                                                              "transfer of a backup or restore)")
    patroni: PatroniSettings = PatroniSettings()
