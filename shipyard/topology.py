"""Where each component runs and how others reach it (DESIGN.md "Addressing").

Same host: one compose network, so a consumer reaches a provider by service name and
container port. Different hosts: each host runs its own compose project, so the consumer
uses the provider host's ``address`` and the port the provider publishes there.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shipyard.catalog import COMPONENTS, Component, component
from shipyard.settings import EnvironmentSettings, HostSettings

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def postgres_replicas(settings: EnvironmentSettings) -> tuple[str, ...]:
    return tuple(f"postgres-replica-{i}" for i in range(1, settings.postgres.replicas + 1))


def postgres_nodes(settings: EnvironmentSettings) -> tuple[str, ...]:
    """Every PostgreSQL server: ``postgres`` (the first primary) and its replicas. Which of
    them is the primary now is not a setting: `make pg-promote` changes it at run time."""
    return ("postgres",) + postgres_replicas(settings)


def slot_name(node: str) -> str:
    """The physical replication slot a node streams on (slot names allow [a-z0-9_])."""
    return node.replace("-", "_")


# The physical slot the backup service's WAL archive streams on (no node is called that).
WAL_ARCHIVE_SLOT = "postgres_backup"


def hosts_running(settings: EnvironmentSettings, name: str) -> tuple[HostSettings, ...]:
    role = component(name).role
    return tuple(h for h in settings.hosts if role in h.roles)


def instance_count(settings: EnvironmentSettings, spec: Component) -> int:
    """How many numbered instances of ``spec`` the settings ask for (see Component.instances)."""
    section, _, key = (spec.instances or "").partition(".")
    return getattr(getattr(settings, section), key)


def components_on(settings: EnvironmentSettings, host: HostSettings) -> tuple[Component, ...]:
    """The compose services of ``host``, numbered instances expanded (``postgres-replica-1``...)."""
    result = []
    for spec in COMPONENTS:
        if spec.role not in host.roles or (spec.name == "worker" and settings.app.worker_replicas == 0):
            continue
        if spec.instances:
            result += [replace(spec, name=f"{spec.name}-{i}") for i in range(1, instance_count(settings, spec) + 1)]
        else:
            result.append(spec)
    return tuple(result)


def published_port(settings: EnvironmentSettings, name: str) -> int | None:
    """Host port a component publishes, or None when it is only reachable inside its network."""
    ports = settings.ports
    numbered = {"postgres-replica": ("postgres", ports.postgres), "redis-replica": ("redis", ports.redis),
                "redis-sentinel": ("redis", ports.sentinel - 1)}
    base, _, number = name.rpartition("-")
    if base in numbered:
        # Instances are published only for consumers on other hosts (the app's reads, Sentinel
        # discovery), at the base port + their number.
        served, first = numbered[base]
        return first + int(number) if needs_remote_access(settings, served) else None
    return {"postgres": ports.postgres, "redis": ports.redis, "edge": ports.edge_http,
            "api": ports.api_direct}.get(name)


def needs_remote_access(settings: EnvironmentSettings, name: str) -> bool:
    """True when some consumer of ``name`` runs on another host than ``name`` does."""
    providers = {h.name for h in hosts_running(settings, name)}
    for consumer in COMPONENTS:
        if name in consumer.depends_on:
            if any(h.name not in providers for h in hosts_running(settings, consumer.name)):
                return True
    return False


def publish_binding(settings: EnvironmentSettings, host: HostSettings, name: str) -> tuple[str, int] | None:
    """(bind address, host port) for a component's published port on ``host``.

    Data ports bind to loopback unless another host must reach them; then they bind to the
    host's own (private) address, never 0.0.0.0. The edge binds where the settings say.
    """
    port = published_port(settings, name)
    if name == "edge":
        return settings.ports.edge_bind, settings.ports.edge_http
    if name == "api" and needs_remote_access(settings, "api"):
        return host.address, port or component("api").port  # type: ignore[return-value]
    if port is None:
        return None
    return (host.address if needs_remote_access(settings, name) else LOOPBACK), port


def endpoint(settings: EnvironmentSettings, name: str, from_host: HostSettings) -> Endpoint:
    """How a component on ``from_host`` reaches the (single) instance of ``name``."""
    providers = hosts_running(settings, name)
    spec = component(name)
    assert spec.port is not None, f"{name} serves no port"
    if any(h.name == from_host.name for h in providers):
        return Endpoint(name, spec.port)
    provider = providers[0]
    binding = publish_binding(settings, provider, name)
    assert binding is not None
    return Endpoint(provider.address, binding[1])


def endpoints(settings: EnvironmentSettings, name: str, from_host: HostSettings) -> tuple[Endpoint, ...]:
    """All instances of ``name`` as seen from ``from_host`` (the edge balances over API hosts)."""
    spec = component(name)
    result = []
    for provider in hosts_running(settings, name):
        if provider.name == from_host.name:
            result.append(Endpoint(name, spec.port or 0))
        else:
            binding = publish_binding(settings, provider, name)
            assert binding is not None
            result.append(Endpoint(provider.address, binding[1]))
    return tuple(result)


def instance_endpoints(settings: EnvironmentSettings, from_host: HostSettings, names: tuple[str, ...],
                       container_port: int) -> tuple[Endpoint, ...]:
    """How ``from_host`` reaches each numbered data instance (replicas, Sentinels): by service
    name on the same host, by the data host's address and published port from another."""
    data_host = hosts_running(settings, "postgres")[0]
    result = []
    for name in names:
        if data_host.name == from_host.name:
            result.append(Endpoint(name, container_port))
        else:
            binding = publish_binding(settings, data_host, name)
            assert binding is not None
            result.append(Endpoint(data_host.address, binding[1]))
    return tuple(result)


def endpoints_of_postgres_nodes(settings: EnvironmentSettings, from_host: HostSettings) -> tuple[Endpoint, ...]:
    """Every PostgreSQL node: clients pick the primary (target_session_attrs=read-write) or,
    for reads that tolerate lag, a replica."""
    return (endpoint(settings, "postgres", from_host),) + instance_endpoints(
        settings, from_host, postgres_replicas(settings), 5432)


def redis_nodes(settings: EnvironmentSettings) -> tuple[str, ...]:
    """``redis`` (the first master) and its replicas; Sentinel decides which is master now."""
    return ("redis",) + tuple(f"redis-replica-{i}" for i in range(1, settings.redis.replicas + 1))


def redis_sentinels(settings: EnvironmentSettings) -> tuple[str, ...]:
    return tuple(f"redis-sentinel-{i}" for i in range(1, settings.redis.sentinels + 1))


def announced(settings: EnvironmentSettings, host: HostSettings, name: str, container_port: int) -> Endpoint:
    """The address a Redis node or Sentinel gives others for itself (what Sentinel hands to
    clients): its service name on one host, its host's address and published port across hosts."""
    if not needs_remote_access(settings, "redis"):
        return Endpoint(name, container_port)
    binding = publish_binding(settings, host, name)
    assert binding is not None
    return Endpoint(host.address, binding[1])
