"""Compose documents as data (dicts → YAML), one project per host.

Paths in the document are relative to the project directory, which is what lands on the
host at ``<deploy_root>/<env>/``: ``./<component>/`` config dirs (rendered) and
``./secrets/<service>/<file>`` (delivered by the apply layer, never rendered).
"""

from __future__ import annotations

import hashlib
from typing import Any

from shipyard import images
from shipyard.catalog import Component, component
from shipyard.settings import EnvironmentSettings, HostSettings
from shipyard.topology import (announced, components_on, endpoint, endpoints_of_postgres_nodes, instance_endpoints,
                               publish_binding, redis_sentinels)

CONFIG_HASH_LABEL = "org.shipyard.config-hash"
TIER_LABEL = "org.shipyard.tier"

# Container paths where each component reads its rendered config directory.
CONFIG_MOUNTS = {
    "postgres": "/etc/postgresql/shipyard",
    "redis": "/usr/local/etc/redis",
    "sentinel": "/usr/local/etc/redis-sentinel",
    "taskplatform": "/etc/taskplatform",
    "nginx": "/etc/nginx/shipyard",
}

# Where PostgreSQL keeps its data: a directory inside the volume (mounted at its parent), so
# the volume root can hold markers such as node.sh's rebuild marker.
PGDATA = "/var/lib/postgresql/data/pgdata"

_LOGGING = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}


def _healthcheck(test: list[str], retries: int = 60, start: str = "2s") -> dict[str, Any]:
    # Probes every second: each tier gate waits for a first passing probe, so the interval is
    # paid once per dependency step of a cold rollout; the checks themselves are cheap.
    return {"test": test, "interval": "1s", "timeout": "5s", "retries": retries, "start_period": start}


def _app_environment(settings: EnvironmentSettings, host: HostSettings) -> dict[str, str]:
    redis = endpoint(settings, "redis", host)
    return {
        # Every PostgreSQL node: the app writes to whichever accepts writes (so a promotion needs
        # no redeploy) and sends reads that tolerate lag to a replica when one is up.
        "TASKS_PG_HOSTS": ",".join(f"{e.host}:{e.port}" for e in endpoints_of_postgres_nodes(settings, host)),
        "TASKS_PG_DATABASE": settings.postgres.database, "TASKS_PG_USER": settings.postgres.user,
        "TASKS_REDIS_HOST": redis.host, "TASKS_REDIS_PORT": str(redis.port),
        # With Sentinels the app asks them for the current master (TASKS_REDIS_HOST/PORT unused).
        "TASKS_REDIS_SENTINELS": ",".join(f"{e.host}:{e.port}" for e in
                                          instance_endpoints(settings, host, redis_sentinels(settings), 26379)),
        "TASKS_REDIS_MASTER_NAME": settings.redis.master_name,
        "TASKS_SECRETS_DIR": "/run/secrets",
        "TASKS_CONFIG_FILE": f"{CONFIG_MOUNTS['taskplatform']}/runtime.json",
        "TASKS_RELEASE_COLOUR": settings.app.release_colour,
        "TASKS_BUILD_VERSION": settings.app.version,
        "TASKS_API_PROCESSES": str(settings.app.api_processes),
    }


def _postgres_service(spec: Component, settings: EnvironmentSettings, host: HostSettings) -> dict[str, Any]:
    """A PostgreSQL node (the first primary or a replica: same command, node.sh tells them
    apart by their data), or the backup service."""
    conf = CONFIG_MOUNTS["postgres"]
    doc: dict[str, Any] = {
        "image": images.component_image("postgres", settings.images.source, settings.images.mirror),
        "environment": {"PGDATA": PGDATA},
        "mem_limit": f"{settings.postgres.memory_limit_mb}m",
    }
    if spec.name == "postgres-backup":
        doc["command"] = ["bash", f"{conf}/backup.sh", "schedule"]
        doc["volumes"] = ["pgbackups:/backups"]
        doc["healthcheck"] = _healthcheck(["CMD", "bash", f"{conf}/backup.sh", "check"], start="30s")
        doc["mem_limit"] = "256m"
        return doc
    doc["command"] = ["bash", f"{conf}/node.sh", spec.name, "postgres", "-c", f"config_file={conf}/postgresql.conf"]
    doc["stop_grace_period"] = "30s"
    doc["shm_size"] = "128m"
    volume = "pgdata" if spec.name == "postgres" else f"pgdata-{spec.name.removeprefix('postgres-')}"
    doc["volumes"] = [f"{volume}:/var/lib/postgresql/data"]
    if spec.name == "postgres":
        # Used only when this node initialises a new cluster (the image's entrypoint, first boot).
        doc["environment"] = {"POSTGRES_USER": settings.postgres.user, "POSTGRES_DB": settings.postgres.database,
                              "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password", **doc["environment"]}
        doc["volumes"].append("./postgres/initdb:/docker-entrypoint-initdb.d:ro")
    # Over TCP on purpose: during first-boot init the entrypoint's temporary server listens
    # on the socket only, which must not count as healthy.
    doc["healthcheck"] = _healthcheck(["CMD", "bash", f"{conf}/health.sh", spec.name], start="5s", retries=120)
    return doc


def _redis_service(spec: Component, settings: EnvironmentSettings, host: HostSettings) -> dict[str, Any]:
    """The master (as first deployed), a replica, or a Sentinel. Each announces the address
    Sentinel hands to clients; after a failover Sentinel, not the deploy, decides who is master."""
    doc: dict[str, Any] = {"image": images.component_image("redis", settings.images.source, settings.images.mirror),
                           "mem_limit": f"{settings.redis.memory_limit_mb}m"}
    if spec.name.startswith("redis-sentinel-"):
        conf = CONFIG_MOUNTS["sentinel"]
        me = announced(settings, host, spec.name, 26379)
        doc["command"] = ["sh", f"{conf}/entrypoint.sh", me.host, str(me.port)]
        doc["volumes"] = [f"sentinel-{spec.name.rpartition('-')[2]}:/data"]
        doc["healthcheck"] = _healthcheck(["CMD", "sh", f"{conf}/health.sh"])
        doc["mem_limit"] = "64m"
        return doc
    conf = CONFIG_MOUNTS["redis"]
    me = announced(settings, host, spec.name, 6379)
    server = ["redis-server", f"{conf}/redis.conf", "--replica-announce-ip", me.host, "--replica-announce-port",
              str(me.port)]
    if redis_sentinels(settings):
        # node.sh asks the Sentinels who the master is now and adds --replicaof itself.
        doc["command"] = ["sh", f"{conf}/node.sh", me.host, str(me.port), *server]
    elif spec.name == "redis":
        doc["command"] = server
    else:
        master = endpoint(settings, "redis", host)
        doc["command"] = [*server, "--replicaof", master.host, str(master.port)]
    doc["volumes"] = ["redisdata:/data" if spec.name == "redis" else f"redisdata-{spec.name.removeprefix('redis-')}:/data"]
    # The password is read from the secret file inside the check: never in compose or env.
    doc["healthcheck"] = _healthcheck(["CMD", "sh", f"{conf}/health.sh"])
    return doc


def _service_specifics(spec: Component, settings: EnvironmentSettings, host: HostSettings) -> dict[str, Any]:
    """The parts that differ per component: image, command, environment, healthcheck."""
    src, mirror = settings.images.source, settings.images.mirror
    app_image = images.app_image(settings.app.version)
    if spec.name == "postgres" or spec.name.startswith(("postgres-replica-", "postgres-backup")):
        return _postgres_service(spec, settings, host)
    if spec.name == "redis" or spec.name.startswith(("redis-replica-", "redis-sentinel-")):
        return _redis_service(spec, settings, host)
    if spec.name == "migrate":
        return {"image": app_image, "command": ["taskplatform", "migrate"],
                "environment": _app_environment(settings, host), "restart": "no"}
    if spec.name == "api":
        return {"image": app_image, "command": ["taskplatform", "api"],
                "environment": _app_environment(settings, host),
                "healthcheck": _healthcheck(["CMD", "taskplatform", "healthcheck", "api"], start="5s"),
                "stop_grace_period": "20s", "mem_limit": f"{settings.app.memory_limit_mb}m"}
    if spec.name == "worker":
        doc = {"image": app_image, "command": ["taskplatform", "worker"],
               "environment": _app_environment(settings, host),
               "healthcheck": _healthcheck(["CMD", "taskplatform", "healthcheck", "worker"], start="5s"),
               "stop_grace_period": "30s", "mem_limit": f"{settings.app.memory_limit_mb}m"}
        if settings.app.worker_replicas != 1:
            doc["deploy"] = {"replicas": settings.app.worker_replicas}
        return doc
    if spec.name == "edge":
        return {"image": images.component_image("nginx", src, mirror),
                "command": ["nginx", "-c", f"{CONFIG_MOUNTS['nginx']}/nginx.conf", "-g", "daemon off;"],
                "healthcheck": _healthcheck(["CMD", "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1/edge/health"])}
    raise KeyError(spec.name)


def _start_condition(consumer: str, provider: str) -> str:
    """What ``consumer`` waits for. PostgreSQL replicas and the backup only wait for `postgres`
    to start, not to be healthy: after a promotion `postgres` is itself a replica, healthy only
    once the new primary (a replica service) runs, so waiting would deadlock a cold start.
    They find the primary themselves and retry until it answers."""
    if provider == "postgres" and component(consumer).name in ("postgres-replica", "postgres-backup"):
        return "service_started"
    # Likewise after a Redis failover `redis` is a replica; and its node.sh asks the Sentinels
    # who the master is, so they must start beside it, not after it.
    if provider == "redis" and component(consumer).name in ("redis-replica", "redis-sentinel"):
        return "service_started"
    return "service_healthy"


def render_compose(settings: EnvironmentSettings, host: HostSettings,
                   config_hashes: dict[str, str]) -> dict[str, Any]:
    """The compose document of ``host``. ``config_hashes``: config dir → content hash."""
    on_host = components_on(settings, host)
    names = {c.name for c in on_host}
    services: dict[str, Any] = {}
    top_secrets: dict[str, Any] = {}
    for spec in on_host:
        service: dict[str, Any] = {"restart": "unless-stopped", "logging": _LOGGING}
        service.update(_service_specifics(spec, settings, host))
        labels = {TIER_LABEL: spec.tier}
        if spec.config_dir:
            service.setdefault("volumes", []).append(f"./{spec.config_dir}:{CONFIG_MOUNTS[spec.config_dir]}:ro")
            if not spec.hot_reload:
                # Compose does not see bind-mounted file contents; a label with their hash makes a
                # config change recreate the container. Hot-reloaded configs are left out on purpose.
                labels[CONFIG_HASH_LABEL] = config_hashes[spec.config_dir]
        service["labels"] = labels
        if spec.secrets:
            service["secrets"] = []
            for secret in spec.secrets:
                source = f"{spec.name}-{secret.target}".replace(".", "-")
                top_secrets[source] = {"file": f"./secrets/{spec.name}/{secret.target}"}
                service["secrets"].append({"source": source, "target": secret.target})
        binding = publish_binding(settings, host, spec.name)
        if binding:
            container_port = spec.port
            service["ports"] = [f"{binding[0]}:{binding[1]}:{container_port}"]
        deps = {}
        for dep in spec.depends_on:
            if dep in names:  # cross-host ordering comes from tier order, not compose
                deps[dep] = {"condition": _start_condition(spec.name, dep)}
        if spec.name in ("api", "worker"):
            # They ask the Sentinels for the Redis master: those are dependencies too.
            for sentinel in sorted(n for n in names if n.startswith("redis-sentinel-")):
                deps[sentinel] = {"condition": "service_healthy"}
        if spec.name in ("api", "worker") and "migrate" in names:
            deps["migrate"] = {"condition": "service_completed_successfully"}
        if deps:
            service["depends_on"] = deps
        services[spec.name] = service
    document: dict[str, Any] = {"name": settings.compose_project, "services": services}
    volumes = {v.split(":", 1)[0]: {} for s in services.values() for v in s.get("volumes", [])
               if not v.startswith("./")}
    if volumes:
        document["volumes"] = volumes
    if top_secrets:
        document["secrets"] = top_secrets
    return document


def hash_files(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + files[path] + b"\0")
    return digest.hexdigest()[:16]
