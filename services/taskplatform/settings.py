"""Process settings: where PostgreSQL, Redis, the config file and the secrets are (TASKS_*).

These are fixed for a process's life (they come from the container's environment). What may
change at run time lives in the runtime config (``runtime_config``), hot-reloaded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskplatform import probe


def parse_host_ports(value: str) -> list[tuple[str, int]]:
    """'a:5432,b:5433' → [('a', 5432), ('b', 5433)]; empty → []."""
    out = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {item!r}")
        out.append((host, int(port)))
    return out


class ProcessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKS_", extra="ignore")

    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_database: str = "tasks"
    pg_user: str = "tasks"
    # `taskplatform db-setup` only: the superuser it connects as, and the roles it provisions
    # (the deploy then runs migrations as the migrator and the API/workers as the app role).
    pg_admin_user: str = "postgres"
    pg_migrator_role: str = "tasks_migrator"
    pg_app_role: str = "tasks_app"
    pg_issuer_role: str = "tasks_issuer"  # db-setup: makes members of the two above (Vault)
    pg_hosts: str = Field("", description="comma-separated host:port of every PostgreSQL node: writes go to the "
                                          "one that accepts them, lag-tolerant reads prefer a replica; "
                                          "empty = pg_host:pg_port alone")
    pg_pool_size: int = 10
    # Short on purpose: a connection attempt to a node that just went away (a promotion) can
    # hang on ARP for ~3 s; failing it fast lets the next request find the new primary.
    pg_connect_timeout_seconds: float = 2.0
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_sentinels: str = Field("", description="comma-separated host:port of Sentinels; empty = use redis_host")
    redis_master_name: str = "tasks"
    secrets_dir: str = "/run/secrets"
    config_file: str = "/etc/taskplatform/runtime.json"
    config_poll_seconds: float = 1.0
    # Runtime config from Consul KV instead of the file, when addresses are given: the document
    # at consul_runtime_path, read with the token in the secret file consul_token (taskplatform.consul_config).
    consul_addrs: str = Field("", description="comma-separated host:port of the Consul servers; empty = the file")
    consul_runtime_path: str = ""
    consul_env: str = Field("", description="the Shipyard environment: names the ACL policies and key prefixes")
    consul_services: str = "api,worker"  # consul-setup: the services that get a token
    # A blocking query's wait: a change arrives at once whatever it is; a partitioned server is
    # noticed after about this (plus 5 s), and an idle process asks once per wait.
    consul_wait_seconds: float = 10.0
    config_cache_file: str = "/tmp/taskplatform/runtime-cache.json"  # the last good document from Consul
    # Each process reports the config it applied in <dir>/<pid>.json (taskplatform.config_report).
    config_state_dir: str = "/tmp/taskplatform/config-state"
    # A blue-green release runs two colours side by side; a process of a colour also serves
    # that colour's preview tasks (``queue.streams_for``). Empty: no colour (tests, a run
    # outside blue-green), the shared stream alone.
    release_colour: Literal["", "blue", "green"] = ""
    build_version: str = "dev"
    # TEST ONLY (release tests play a bad release with it; the product never sets it): this
    # share of the API's /v1/ requests answer 500 ``injected_fault`` (``taskplatform.colours``).
    fault_error_share: float = Field(0.0, ge=0, le=1)
    api_host: str = "0.0.0.0"
    api_port: int = probe.DEFAULT_API_PORT
    api_processes: int = 2
    # Overload is refused, not queued (see taskplatform.limits): requests in flight per API
    # process beyond this get 503 at once; a request waits at most this long for a PostgreSQL
    # connection of its process's pool, then gets 503.
    api_max_concurrent_requests: int = Field(32, ge=1)
    pg_acquire_timeout_seconds: float = Field(1.0, gt=0)
    # What one request may cost: its body (413 beyond) and the rows of one page (`limit`).
    api_max_body_bytes: int = Field(65_536, ge=1024)
    api_max_page_size: int = Field(100, ge=1, le=1000)
    # Redis is not needed to accept a task (PostgreSQL is the truth): a Redis call of the API
    # (rate limit, enqueue) that takes longer is given up, so an unreachable Redis slows no create.
    api_redis_timeout_seconds: float = Field(0.5, gt=0)
    # Bearer tokens must name this issuer and audience; the key set is re-read this often.
    jwt_issuer: str = "shipyard"
    jwt_audience: str = "taskplatform"
    jwt_keys_refresh_seconds: float = Field(1.0, gt=0)
    # An API process keeps a looked-up API key this long: a revoked key is refused by every
    # process within it (``taskplatform.api_keys``).
    api_key_cache_seconds: float = Field(5.0, ge=0, le=300)
    # Task kinds (``taskplatform.kinds``): these modules (import paths, comma-separated), plus
    # every module installed distributions name in the entry-point group ``taskplatform.kinds``.
    # The demo kinds by default; empty: the entry points alone.
    kinds_packages: str = "taskplatform_demo_kinds"
    # Threads a worker runs plain-function ("thread") kinds in; a timed-out body keeps its thread
    # until it returns (Python cannot stop a thread), so this is above worker_concurrency.
    kind_threads: int = Field(32, ge=1)
    # A create's run_at / delay_seconds: at most this far ahead (30 days).
    api_max_delay_seconds: float = Field(2_592_000.0, gt=0)
    worker_metrics_port: int = 9101
    heartbeat_file: str = probe.DEFAULT_HEARTBEAT_FILE
    # Reliability timings (seconds). Tests shorten them; production keeps the defaults.
    lease_seconds: float = 30.0  # a running task's lease; renewed while it runs
    claim_idle_seconds: float = 30.0  # pending stream entries idle this long are reclaimed
    # A consumer of the group idle this long with no pending entries is removed (a worker gone).
    consumer_forget_idle_seconds: float = 300.0
    maintenance_interval_seconds: float = 1.0  # reconciler / scheduler / reclaim period
    # How often a worker asks PostgreSQL how many tasks are queued and how old the oldest is
    # (tasks_queued, tasks_oldest_queued_age_seconds): a scrape reads the last answer.
    queue_metrics_interval_seconds: float = Field(5.0, gt=0)
    shutdown_grace_seconds: float = 20.0
    # Webhooks: how often an idle dispatcher asks for due deliveries (a busy one asks again at
    # once), and how long past ``webhook_timeout_seconds`` a claimed delivery stays leased
    # before another worker may send it again (its dispatcher died).
    webhook_poll_seconds: float = Field(0.5, gt=0)
    webhook_lease_margin_seconds: float = Field(30.0, ge=0)

    # PostgreSQL credentials (and, with vault_kv_path, the secrets) from Vault instead of the
    # files, when vault_addr is given (``taskplatform.vault_client``, ``taskplatform.db_credentials``):
    # the process logs in with its AppRole (vault_role_id: config, not a secret) and the
    # response-wrapped, single-use secret-id the deploy put in the secret file
    # vault_wrapped_secret_id; its PostgreSQL users come from <vault_database_mount>/creds/<vault_db_role>.
    # Empty vault_addr: the static password files (postgres_password), as before.
    vault_addr: str = Field("", description="https://host:8200 of Vault; empty = the secret files alone")
    vault_ca_file: str = Field("", description="the CA certificate Vault's TLS is checked against")
    vault_role_id: str = ""
    vault_wrapped_secret_id: str = "vault_wrapped_secret_id"  # a file name in secrets_dir
    # Where the token is kept across restarts of the container (its own directory, 0600): a
    # restarted process resumes it (renewing it) instead of needing a fresh wrapped secret-id.
    # Empty: memory only, and a restart needs one from the deploy.
    vault_token_file: str = ""
    vault_approle_mount: str = "approle"
    vault_database_mount: str = "database"
    vault_db_role: str = "tasks_app"
    # The service's own KV v2 path (e.g. services/api under the mount secret): its secrets are
    # kept as files in <vault_state_dir>/secrets and read before secrets_dir's. Empty: not read.
    vault_kv_mount: str = "secret"
    vault_kv_path: str = ""
    # How often the KV copies are read again unasked (each read is a request to Vault, and an
    # audit log entry): a deploy that writes new copies asks at once through vault_refresh_file.
    vault_kv_poll_seconds: float = Field(300.0, gt=0)
    # Touched by the deploy after it wrote new copies: the keeper reads them within a tick.
    vault_refresh_file: str = ""
    # Where the version of each KV copy held is reported (JSON, no value): the deploy waits on
    # it after a rotation before the servers drop the old value. Empty: not reported.
    vault_report_file: str = ""
    # Where the process keeps what Vault gave it, for its own processes (the API's uvicorn
    # processes read the PostgreSQL credentials there): a tmpfs, mode 0700, files 0600.
    vault_state_dir: str = "/run/taskplatform-vault"
    vault_timeout_seconds: float = Field(5.0, gt=0)
    # How often a process looks for new PostgreSQL credentials in vault_state_dir.
    vault_credentials_poll_seconds: float = Field(0.5, gt=0)

    def vault_enabled(self) -> bool:
        return bool(self.vault_addr)

    def pg_nodes(self) -> list[tuple[str, int]]:
        return parse_host_ports(self.pg_hosts) or [(self.pg_host, self.pg_port)]

    def sentinels(self) -> list[tuple[str, int]]:
        return parse_host_ports(self.redis_sentinels)
