"""Typed settings of one environment (pydantic-settings).

Sources, highest priority first: ``SHIPYARD_*`` environment variables (nested keys joined
by ``__``, e.g. ``SHIPYARD_PORTS__EDGE_HTTP=9090``), then the ``SHIPYARD`` dict of the
environment's inventory file. Unknown keys are errors. Validation errors are turned into
``SettingsError`` naming the file or variable, the key path and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from shipyard.errors import SettingsError, ShipyardError
from shipyard.images import ImageSource

ENV_PREFIX = "SHIPYARD_"
NESTED_DELIMITER = "__"

# Names that end up in compose project names, file paths and database identifiers.
_NAME = r"^[a-z][a-z0-9-]{0,30}$"
_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSettings(Strict):
    source: ImageSource = Field("local", description="'official' (pull pinned tags) or 'local' (build from Debian packages)")
    mirror: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._/-]+)?$",
                               description="registry-mirror prefix such as 'mirror.example:5000'")


class PortSettings(Strict):
    edge_http: int = Field(8080, ge=1, le=65535, description="host port the edge publishes HTTP on")
    edge_bind: str = Field("127.0.0.1", description="host address the edge binds ('0.0.0.0' for all)")
    api_direct: int | None = Field(None, ge=1, le=65535,
                                   description="loopback port publishing the API directly (benchmarks); null to not publish")
    postgres: int = Field(5432, ge=1, le=65535, description="host port PostgreSQL publishes on")
    redis: int = Field(6379, ge=1, le=65535, description="host port Redis publishes on")
    sentinel: int = Field(26379, ge=1, le=65535,
                          description="first host port of the Sentinels (published only when app hosts are other hosts)")

    @field_validator("edge_bind")
    @classmethod
    def _ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value


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


class RuntimeSettings(Strict):
    """Initial runtime config of the task platform (hot-reloadable later through the config source)."""

    version: str = Field("1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    rate_limit_per_minute: int = Field(6000, gt=0)
    worker_concurrency: int = Field(4, ge=1, le=64)
    task_max_attempts: int = Field(5, ge=1)
    retry_base_seconds: float = Field(1.0, gt=0)
    retry_max_seconds: float = Field(60.0, gt=0)
    reconcile_after_seconds: float = Field(30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class AppSettings(Strict):
    version: str = Field("0.1.0", pattern=r"^[0-9A-Za-z._-]{1,64}$", description="task platform build version (image tag)")
    release_colour: Literal["blue", "green"] = "blue"
    api_processes: int = Field(2, ge=1, le=64, description="uvicorn worker processes in the API container")
    worker_replicas: int = Field(1, ge=0, le=32, description="worker containers per app host")
    memory_limit_mb: int = Field(512, ge=128)


class HealthSettings(Strict):
    data_timeout_s: int = Field(120, ge=5, le=3600, description="seconds the data tier may take to become healthy")
    app_timeout_s: int = Field(120, ge=5, le=3600)
    edge_timeout_s: int = Field(60, ge=5, le=3600)


class HostSettings(Strict):
    """One target host, from the inventory (not settable through the SHIPYARD dict)."""

    name: str = Field(pattern=_NAME)  # logical name: compose/<env>/<name>/
    connect: str  # pyinfra host string: '@local' or an SSH hostname
    address: str  # address other hosts use to reach this host's published ports
    roles: tuple[str, ...]


class EnvironmentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER,
                                      extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="environment name (lower-case, e.g. 'ci')")
    deploy_root: str = Field("/opt/shipyard", pattern=r"^/[A-Za-z0-9._/-]+$",
                             description="absolute directory on each host that holds the compose projects")
    images: ImageSettings = ImageSettings()
    ports: PortSettings = PortSettings()
    postgres: PostgresSettings = PostgresSettings()
    redis: RedisSettings = RedisSettings()
    app: AppSettings = AppSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    health: HealthSettings = HealthSettings()
    hosts: tuple[HostSettings, ...]

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        # Environment variables override the inventory file; no .env or secrets dir sources.
        return (env_settings, init_settings)

    @property
    def compose_project(self) -> str:
        return f"shipyard-{self.name}"

    def hosts_with_role(self, role: str) -> tuple[HostSettings, ...]:
        return tuple(h for h in self.hosts if role in h.roles)

    def host(self, name: str) -> HostSettings:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


# SHIPYARD_* variables that configure the tool, not the environment.
TOOL_VARIABLES = frozenset({"SHIPYARD_AGE_IDENTITY_DIR"})


def _settings_env_vars(model: Any, prefix: tuple[str, ...]):
    for name, field in model.model_fields.items():
        if name == "hosts":
            continue
        path = prefix + (name,)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield _env_var_for(path)  # a whole section as JSON is allowed too
            yield from _settings_env_vars(field.annotation, path)
        else:
            yield _env_var_for(path)


def _env_var_for(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part) for part in loc).upper()


def _fix_for(error: dict[str, Any], model_fields_hint: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"remove this key or correct its spelling; allowed keys here: {model_fields_hint}"
    if kind == "missing":
        return "add this key"
    ctx = error.get("ctx") or {}
    if "pattern" in ctx:
        return f"use a value matching {ctx['pattern']}"
    if "expected" in ctx:
        return f"use one of {ctx['expected']}"
    if "ge" in ctx or "le" in ctx or "gt" in ctx:
        bounds = ", ".join(f"{k} {v}" for k, v in ctx.items() if k in ("ge", "gt", "le", "lt"))
        return f"use a number with {bounds}"
    return f"use a valid value ({error['msg'].lower()})"


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model: Any = EnvironmentSettings
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return "(see shipyard/settings.py)"
        model = field.annotation
    return ", ".join(sorted(model.model_fields))


def load_settings(data: dict[str, Any], hosts: list[HostSettings], source_file: str,
                  environ: dict[str, str]) -> EnvironmentSettings:
    """Validate one environment; raise SettingsError listing every problem with file, key path and fix."""
    if "hosts" in data:
        raise SettingsError([ShipyardError(f"{source_file}: SHIPYARD.hosts", "hosts are not settings",
                                           "list hosts in the inventory's groups (edge, app, data)")])
    env_vars = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k not in TOOL_VARIABLES}
    known = set(_settings_env_vars(EnvironmentSettings, ()))
    unknown = sorted(k for k in env_vars if k not in known and not any(k.startswith(p + NESTED_DELIMITER) for p in known))
    if unknown:
        raise SettingsError([ShipyardError(f"environment variable {k}", "no such setting",
                                           f"unset it or correct its spelling; settings variables look like "
                                           f"SHIPYARD_PORTS__EDGE_HTTP (see shipyard/settings.py)") for k in unknown])
    try:
        settings = _validate_with_environ(data, hosts, env_vars)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            env_var = _env_var_for(loc)
            where = (f"environment variable {env_var}" if env_var in env_vars
                     else f"{source_file}: SHIPYARD." + ".".join(str(p) for p in loc))
            got = "" if error["type"] == "missing" else f" (got {error.get('input')!r})"
            problems.append(ShipyardError(where, error["msg"] + got, _fix_for(error, _allowed_keys(loc))))
        raise SettingsError(problems) from None
    _check_hosts(settings, source_file)
    return settings


class _GivenEnvironSource(EnvSettingsSource):
    """Reads SHIPYARD_* from a given mapping instead of os.environ, so loading is a pure
    function of its inputs (tests and the render-staleness check rely on that)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        self._given = environ
        super().__init__(settings_cls, case_sensitive=False, env_prefix=ENV_PREFIX,
                         env_nested_delimiter=NESTED_DELIMITER)

    def _load_env_vars(self):
        return parse_env_vars(self._given, False, False, None)


def _validate_with_environ(data: dict[str, Any], hosts: list[HostSettings],
                           env_vars: dict[str, str]) -> EnvironmentSettings:
    class _Scoped(EnvironmentSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (_GivenEnvironSource(settings_cls, env_vars), init_settings)

    return _Scoped(**data, hosts=tuple(hosts))


def _check_hosts(settings: EnvironmentSettings, source_file: str) -> None:
    problems = []
    names = [h.name for h in settings.hosts]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(ShipyardError(f"{source_file}: host {name}", "two hosts share this shipyard_host name",
                                      "give each host a unique 'shipyard_host' in its inventory data"))
    for role in ("edge", "app", "data"):
        if not any(role in h.roles for h in settings.hosts):
            problems.append(ShipyardError(f"{source_file}: group '{role}'", f"no host has the {role} role",
                                          f"add a module-level list '{role} = [...]' naming at least one host"))
    data_hosts = [h.name for h in settings.hosts if "data" in h.roles]
    if len(data_hosts) > 1:
        problems.append(ShipyardError(f"{source_file}: group 'data'",
                                      f"{len(data_hosts)} data hosts ({', '.join(data_hosts)}) but this release runs a single "
                                      "PostgreSQL and Redis", "put exactly one host in the data group"))
    for host in settings.hosts:
        if not re.match(r"^[A-Za-z0-9.:-]+$", host.address):
            problems.append(ShipyardError(f"{source_file}: host {host.name}: address", f"not a hostname or IP: {host.address!r}",
                                          "set 'address' in the host's data to its private IP or DNS name"))
    if problems:
        raise SettingsError(problems)
