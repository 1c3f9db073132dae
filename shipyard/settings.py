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

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from shipyard.component import EVERY_HOST, TIERS, Strict
from shipyard.components import COMPONENTS
from shipyard.errors import SettingsError, ShipyardError

ImageSource = Literal["official", "local"]

ENV_PREFIX = "SHIPYARD_"
NESTED_DELIMITER = "__"

# Names that end up in compose project names, file paths and database identifiers.
_NAME = r"^[a-z][a-z0-9-]{0,30}$"
_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"


# A group an inventory leaves out is another's hosts: the cache beside the data unless told otherwise.
ROLE_DEFAULTS = {"cache": "data"}

class ImageSettings(Strict):
    source: ImageSource = Field("local", description="'official' (pull pinned tags) or 'local' (build from Debian packages)")
    mirror: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._/-]+)?$",
                               description="registry-mirror prefix such as 'mirror.example:5000'")


def _ports_model() -> type[BaseModel]:
    """``ports``: one key per port a component declares (shipyard.component.Port.setting),
    plus the bind address of each public port."""
    fields: dict[str, Any] = {}
    for comp in COMPONENTS:
        for port in (p for svc in comp.services for p in (svc.port, *svc.extra_ports)):
            if port is None or port.setting is None:
                continue
            fields[port.setting] = (int | None if port.default is None else int,
                                    Field(port.default, ge=1, le=65535, description=port.description))
            if port.bind_setting:
                fields[port.bind_setting] = (str, Field(port.bind_default,
                                                        description=f"host address {port.setting} binds ('0.0.0.0' for all)"))
    binds = tuple(dict.fromkeys(port.bind_setting for comp in COMPONENTS for svc in comp.services
                                for port in (svc.port, *svc.extra_ports) if port is not None and port.bind_setting))

    def _bind_is_ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    validators = {"_bind_is_ip": field_validator(*binds)(classmethod(_bind_is_ip))} if binds else {}
    return create_model("PortSettings", __base__=Strict, __validators__=validators, **fields)


PortSettings = _ports_model()


class NetworkSettings(Strict):
    """The compose project's network on each host. Fixed, so that a service that must keep its
    address across container re-creation (Consul servers: raft knows its peers by address) can;
    every other container gets one from the upper half."""

    subnet: ipaddress.IPv4Network = Field(ipaddress.IPv4Network("10.213.0.0/24"),
                                          description="IPv4 subnet of the project network (/24 to /16); "
                                                      "must not overlap another network of the host")

    @field_validator("subnet")
    @classmethod
    def _room_for_both_halves(cls, value: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not 16 <= value.prefixlen <= 24:
            raise ValueError(f"{value} has a /{value.prefixlen} prefix; use a /16 to /24 (fixed addresses "
                             "take the lower half, Docker the upper)")
        return value

    @property
    def dynamic_range(self) -> str:
        return str(list(self.subnet.subnets(prefixlen_diff=1))[1])

    def fixed_address(self, n: int) -> str:
        """The n-th fixed address (0-based): from .10 on, in the lower half."""
        return str(self.subnet.network_address + 10 + n)


class SecretSettings(Strict):
    generate_missing: bool = Field(False, description="generate a missing secret at deploy time: only for "
                                                      "per-machine, throw-away environments (local, ci)")
    backend: str = Field("age", description="where services take their secrets at run time: 'age' (files the "
                                            "deploy delivers), or a component that serves them (docs/secrets.md)")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        known = ["age", *(comp.name for comp in COMPONENTS if comp.secrets_backend)]
        if value not in known:
            raise ValueError(f"no secrets backend {value!r}; use one of {', '.join(known)}")
        return value


# ``health.<tier>_timeout_s``: seconds a tier may take to become healthy in a rollout.
HealthSettings = create_model("HealthSettings", __base__=Strict, **{
    f"{tier}_timeout_s": (int, Field(60 if tier == "edge" else 120, ge=5, le=3600,
                                     description=f"seconds the {tier} tier may take to become healthy"))
    for tier in TIERS})


class ReleaseSettings(Strict):
    """Blue-green releases of the services released in colours (shipyard.bluegreen)."""

    watch_seconds: int = Field(60, ge=0, le=3600, description="after the switch: how long the new colour is "
                                                              "watched before the release is recorded as done")
    keep_previous_seconds: int = Field(600, ge=0, description="the previous colour's API stays warm this long "
                                                              "after a switch, for an instant rollback")
    baseline_seconds: int = Field(30, ge=5, le=600, description="traffic just before the switch that the watch "
                                                                "compares with (the old colour's)")
    max_error_rate: float = Field(0.02, ge=0, le=1, description="share of 5xx answers of the new colour that "
                                                                "rolls back (beyond the old colour's own rate)")
    max_p95_ratio: float = Field(3.0, ge=1, description="new colour's p95 over the old colour's that rolls back")
    p95_floor_ms: float = Field(100.0, ge=0, description="a p95 under this never rolls back (noise of idle systems)")
    min_requests: int = Field(20, ge=1, description="fewer answers in the window decide nothing yet")
    latency_strikes: int = Field(3, ge=1, description="stretches of min_requests answers in a row whose p95 is "
                                                      "above the limit that roll back (one slow stretch, a cold "
                                                      "start, does not)")
    smoke_timeout_seconds: int = Field(30, ge=5, le=600, description="the smoke test's create -> completed round trip")


class HostSettings(Strict):
    """One target host, from the inventory (not settable through the SHIPYARD dict)."""

    name: str = Field(pattern=_NAME)  # logical name: compose/<env>/<name>/
    connect: str  # pyinfra host string: '@local' or an SSH hostname
    address: str  # address other hosts use to reach this host's published ports
    roles: tuple[str, ...]
    # (group, position in the group's inventory list) of each of its groups: a group's hosts are
    # taken in the order the inventory lists them (its first runs what a group runs once).
    group_positions: tuple[tuple[str, int], ...] = ()
    # How the deploying machine reaches it over SSH: pyinfra's host data keys of the same names,
    # which the controller's own ssh (make status/plan/logs, releases, drills) uses too.
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_key: str | None = None  # a private key file; None: the ssh client's own (agent, ~/.ssh)
    ssh_known_hosts_file: str | None = None  # its host key checked against this file only (strictly)
    # pyinfra's ``_sudo``: a non-root ssh_user becomes root by passwordless sudo (``sudo -n``),
    # for the deploy's commands and the controller's alike.
    sudo: bool = False

    def position_in(self, group: str) -> int:
        """Where the inventory lists this host in ``group`` (0: first, or not recorded)."""
        return dict(self.group_positions).get(group, 0)


class CoreSettings(BaseSettings):
    """What every environment has; each component adds its own sections (EnvironmentSettings)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER,
                                      extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME, description="environment name (lower-case, e.g. 'ci')")
    deploy_root: str = Field("/opt/shipyard", pattern=r"^/[A-Za-z0-9._/-]+$",
                             description="absolute directory on each host that holds the compose projects")
    images: ImageSettings = ImageSettings()
    ports: PortSettings = PortSettings()  # type: ignore[valid-type]
    health: HealthSettings = HealthSettings()
    secrets: SecretSettings = SecretSettings()
    network: NetworkSettings = NetworkSettings()
    release: ReleaseSettings = ReleaseSettings()
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
        """The hosts of an inventory group, in the order the group lists them; a group no host has
        is another's hosts when it has a default (``cache``: the ``data`` hosts)."""
        if role == EVERY_HOST:
            return self.hosts
        hosts = tuple(sorted((h for h in self.hosts if role in h.roles), key=lambda h: h.position_in(role)))
        if not hosts and role in ROLE_DEFAULTS:
            return self.hosts_with_role(ROLE_DEFAULTS[role])
        return hosts

    def limited(self, limit: str | None) -> tuple[HostSettings, ...]:
        """The hosts a deploy with LIMIT (``h1,h3``: ``shipyard_host`` names) changes, in the
        inventory's order; every host without one."""
        if not limit:
            return self.hosts
        names = [n.strip() for n in limit.split(",") if n.strip()]
        unknown = [n for n in names if n not in {h.name for h in self.hosts}]
        if unknown or not names:
            raise ShipyardError(f"LIMIT={limit}", f"environment {self.name} has no host "
                                f"{', '.join(unknown) or '(none named)'}",
                                f"name some of its hosts, comma-separated: {', '.join(h.name for h in self.hosts)}")
        return tuple(h for h in self.hosts if h.name in names)

    def host(self, name: str) -> HostSettings:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _component_sections() -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for comp in COMPONENTS:
        for key, model in comp.settings.items():
            if key in sections or key in CoreSettings.model_fields:
                raise TypeError(f"settings section {key!r} of component {comp.name} is taken")
            sections[key] = (model, model())
    return sections


# The settings of an environment: the core's sections and every registered component's.
EnvironmentSettings = create_model("EnvironmentSettings", __base__=CoreSettings, **_component_sections())


# SHIPYARD_* variables that configure the tool, not the environment (each read where noted).
TOOL_VARIABLES = frozenset({
    "SHIPYARD_AGE_IDENTITY_DIR",  # shipyard/secretstore.py: where the age identities are
    "SHIPYARD_LOCK_DIR",  # shipyard/lock.py: where the environments' deploy locks are
    # images/base/build.sh: the Debian mirrors of the base image (a deploy's build inherits them)
    "SHIPYARD_DEBIAN_MIRROR", "SHIPYARD_DEBIAN_SECURITY_MIRROR",
})


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


def _model_at(path: tuple[Any, ...]) -> Any:
    """The settings model at a key path (None: the path leads to no model)."""
    model: Any = EnvironmentSettings
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    return ", ".join(sorted(model.model_fields)) if model else "(see shipyard/settings.py)"


def _retired(loc: tuple[Any, ...]) -> tuple[str, str] | None:
    """(what changed, the fix) of a key its model no longer has (Strict.retired), or None."""
    model = _model_at(loc[:-1])
    return getattr(model, "retired", {}).get(loc[-1]) if model else None




def settings_variables(environ: dict[str, str]) -> dict[str, str]:
    """The ``SHIPYARD_*`` variables of ``environ`` that override settings (not the tool's own)."""
    return {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k not in TOOL_VARIABLES}


def load_settings(data: dict[str, Any], hosts: list[HostSettings], source_file: str,
                  environ: dict[str, str]) -> EnvironmentSettings:
    """Validate one environment; raise SettingsError listing every problem with file, key path and fix."""
    if "hosts" in data:
        raise SettingsError([ShipyardError(f"{source_file}: SHIPYARD.hosts", "hosts are not settings",
                                           "list hosts in the inventory's groups (edge, app, data)")])
    env_vars = settings_variables(environ)
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
            retired = _retired(loc) if error["type"] == "extra_forbidden" else None
            if retired:
                drop = f"unset {env_var}" if env_var in env_vars else f"remove it from {source_file}"
                problems.append(ShipyardError(where, f"this setting was removed: {retired[0]}", f"{drop}; {retired[1]}"))
                continue
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
    # Groups of the services the settings run (a service a setting turns off needs no host).
    groups = sorted({svc.group for comp in COMPONENTS for svc in comp.services if not svc.scale or svc.scale(settings)})
    for group in groups:
        if group != EVERY_HOST and not settings.hosts_with_role(group):
            users = sorted({comp.name for comp in COMPONENTS for svc in comp.services
                            if svc.group == group and (not svc.scale or svc.scale(settings))})
            problems.append(ShipyardError(f"{source_file}: group '{group}'", f"no host has the {group} role "
                                          f"(it runs {', '.join(users)})",
                                          f"add a module-level list '{group} = [...]' naming at least one host"))
    for comp in COMPONENTS:
        comp_groups = sorted({svc.group for svc in comp.services if svc.group != EVERY_HOST})
        hosts = sorted({h.name for group in comp_groups for h in settings.hosts_with_role(group)})
        if comp.single_host and len(hosts) > 1:
            problems.append(ShipyardError(f"{source_file}: group '{', '.join(comp_groups)}'",
                                          f"{len(hosts)} hosts ({', '.join(hosts)}) but this release runs {comp.name} "
                                          "on a single host", f"put exactly one host in the {' and '.join(comp_groups)} group"))
    for comp in COMPONENTS:
        for key, what, fix in comp.settings_problems(settings) if comp.settings_problems else ():
            problems.append(ShipyardError(f"{source_file}: SHIPYARD.{key}", what, fix))
    for host in settings.hosts:
        if not re.match(r"^[A-Za-z0-9.:-]+$", host.address):
            problems.append(ShipyardError(f"{source_file}: host {host.name}: address", f"not a hostname or IP: {host.address!r}",
                                          "set 'address' in the host's data to its private IP or DNS name"))
    if problems:
        raise SettingsError(problems)
