"""settings + catalog → files: one compose project and native config files per host.

Pure and deterministic: the same settings give byte-identical files. Output paths are
relative to compose/<env>/<host>/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from shipyard.render.compose import CONFIG_MOUNTS, hash_files, render_compose
from shipyard.render.templates import render_template
from shipyard.settings import EnvironmentSettings, HostSettings
from shipyard.topology import (WAL_ARCHIVE_SLOT, announced, components_on, endpoints, instance_endpoints,
                               postgres_nodes, redis_nodes, redis_sentinels)

COMPOSE_FILE = "compose.yaml"
# A starting Redis node asks the Sentinels (starting beside it) for the master this long.
SENTINEL_WAIT_S = 10
# A node retries its clone this many times, 2 s apart, before it exits naming the nodes it tried.
REPLICA_CLONE_ATTEMPTS = 15
# A failed scheduled backup (no primary answering, say mid-promotion) is retried this soon.
BACKUP_RETRY_S = 10
HEADER = ("# Rendered by Shipyard (`make render`); do not edit. Secrets are files under ./secrets/,\n"
          "# delivered at deploy time and never rendered here.\n")


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared sub-dicts out in full: anchors make a compose file harder to review."""

    def ignore_aliases(self, data):  # noqa: D401
        return True


@dataclass(frozen=True)
class RenderedHost:
    host: HostSettings
    files: dict[str, bytes]  # relative path → content
    compose: dict


def _config_files(settings: EnvironmentSettings, host: HostSettings) -> dict[str, dict[str, bytes]]:
    """config dir → {relative path: bytes} for the components on ``host``."""
    dirs = {c.config_dir for c in components_on(settings, host) if c.config_dir}
    base = {"env": settings.name}
    out: dict[str, dict[str, bytes]] = {}
    if "postgres" in dirs:
        ctx = base | {"postgres": settings.postgres, "attempts": REPLICA_CLONE_ATTEMPTS, "retry_s": BACKUP_RETRY_S,
                      "nodes": postgres_nodes(settings), "wal_slot": WAL_ARCHIVE_SLOT}
        out["postgres"] = {f"postgres/{n}": render_template(f"postgres/{n}.j2", ctx).encode()
                           for n in ("postgresql.conf", "pg_hba.conf", "cluster.sh", "node.sh", "health.sh",
                                     "backup.sh", "restore.sh", "initdb/10-replication-role.sh")}
    if dirs & {"redis", "sentinel"}:
        data_host = settings.hosts_with_role("data")[0]
        # The master as first deployed; after a failover the Sentinels know the current one.
        redis_base = base | {"redis": settings.redis, "master": announced(settings, data_host, "redis", 6379)}
    if "redis" in dirs:
        ctx = redis_base | {"sentinels": instance_endpoints(settings, data_host, redis_sentinels(settings), 26379),
                            "nodes": [announced(settings, data_host, node, 6379) for node in redis_nodes(settings)],
                            "sentinel_wait_s": SENTINEL_WAIT_S}
        names = ["redis.conf", "health.sh"] + (["node.sh"] if settings.redis.sentinels else [])
        out["redis"] = {f"redis/{n}": render_template(f"redis/{n}.j2", ctx).encode() for n in names}
    if "sentinel" in dirs:
        ctx = redis_base | {"conf_dir": CONFIG_MOUNTS["sentinel"]}
        out["sentinel"] = {f"sentinel/{n}": render_template(f"sentinel/{n}.j2", ctx).encode()
                           for n in ("sentinel.conf", "entrypoint.sh", "health.sh")}
    if "taskplatform" in dirs:
        runtime = json.dumps(settings.runtime.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        out["taskplatform"] = {"taskplatform/runtime.json": runtime.encode()}
    if "nginx" in dirs:
        ctx = base | {"api_servers": endpoints(settings, "api", host)}
        out["nginx"] = {"nginx/nginx.conf": render_template("nginx/nginx.conf.j2", ctx).encode()}
    return out


def render_host(settings: EnvironmentSettings, host: HostSettings) -> RenderedHost:
    by_dir = _config_files(settings, host)
    compose = render_compose(settings, host, {d: hash_files(files) for d, files in by_dir.items()})
    files: dict[str, bytes] = {}
    for dir_files in by_dir.values():
        files.update(dir_files)
    text = HEADER + yaml.dump(compose, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False, width=120)
    files[COMPOSE_FILE] = text.encode()
    return RenderedHost(host=host, files=dict(sorted(files.items())), compose=compose)


def render_environment(settings: EnvironmentSettings) -> dict[str, RenderedHost]:
    """host name → rendered files, for every host of the environment."""
    return {host.name: render_host(settings, host) for host in settings.hosts}
