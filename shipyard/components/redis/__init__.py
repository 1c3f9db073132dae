"""Redis: the master as first deployed (``redis``), ``redis.replicas`` replicas, and
``redis.sentinels`` Sentinels that decide which node is the master after a failover.

Redis nodes carry no ``replicaof`` in compose: ``files/redis/node.sh`` asks the Sentinels who
the master is now. Each Sentinel keeps its own config file in its own volume, seeded once
from the rendered ``sentinel.conf`` by ``files/sentinel/entrypoint.sh``. The Sentinels have a
config dir of their own, so tuning them leaves the Redis nodes running.

Beside each node and each Sentinel runs an exporter (``redis-exporter``,
``redis-replica-exporter-N``, ``redis-sentinel-exporter-N``), logged in as the ACL user
``redis_exporter`` (read-only server state, no keys), scraped on the project network only. One per
Sentinel, not one per set: "the Sentinels disagree about the master" compares their own views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Rotation, SecretFile, Service, Wait
from shipyard.components.redis.commands import COMMANDS
from shipyard.components.redis.settings import RedisSettings

UID = 999  # the official redis image's uid (the local image is built to match)
CONF = "/usr/local/etc/redis"
SENTINEL_CONF = "/usr/local/etc/redis-sentinel"
# A starting Redis node asks the Sentinels (starting beside it) for the master this long (rounds
# of about a second): a majority usually answers within a few; a cold start of the whole stack
# on a busy two-core machine took longer than 10, and the fallback (the master as deployed)
# is wrong after a failover.
SENTINEL_WAIT_S = 30

# A rotated Redis password is taken live (files/redis/rotate.sh): each node accepts the new
# and the old one until every client has been recreated with the new, then drops the old; the
# Sentinels are told the new one (files/sentinel/rotate.sh). No node or Sentinel restarts.
_AUTH = SecretFile("redis_auth.conf", "redis_password", template="secrets/auth.conf.j2",
                   rotation=Rotation(apply=("sh", f"{CONF}/rotate.sh", "apply"),
                                     retire=("sh", f"{CONF}/rotate.sh", "retire")))
# The Sentinels' own password: their clients (the app, node.sh asking who the master is) need it.
# A node reads it only when it starts; the Sentinels themselves are recreated with a new one.
_SENTINEL_AUTH = SecretFile("sentinel_password", "sentinel_password")
_NODE_SENTINEL_AUTH = SecretFile("sentinel_password", "sentinel_password", rotation=Rotation())
_NODE_HEALTH = Health(("sh", f"{CONF}/health.sh"), start_period_s=60)
_PORT_DOC = "host port Redis publishes on (replica N: this + N, published only for other hosts)"
EXPORTER_PORT = 9121
EXPORTER_UID = 59000  # the official redis_exporter image's uid (the local image is built to match)
EXPORTER_USER = "redis_exporter"
# The exporters' ACL user: each node includes it from a secret file and takes a rotated value
# live (files/redis/rotate-exporter.sh: the new password beside the old until every exporter is
# recreated); each Sentinel's entrypoint writes it into its own config: they are recreated.
_EXPORTER_ACL = SecretFile("redis_exporter_acl.conf", "redis_exporter_password", template="secrets/exporter-acl.conf.j2",
                           rotation=Rotation(apply=("sh", f"{CONF}/rotate-exporter.sh", "apply"),
                                             retire=("sh", f"{CONF}/rotate-exporter.sh", "retire")))
_EXPORTER_RAW = SecretFile("redis_exporter_password", "redis_exporter_password")
# redis_exporter reads passwords as a JSON map, server URI → password (--redis.password-file).
_EXPORTER_MAP = SecretFile("redis_exporter_passwords.json", "redis_exporter_password",
                           template="secrets/exporter-passwords.json.j2")


def watched(inst) -> str:
    """The node or Sentinel an exporter instance watches (``redis-replica-exporter-1`` →
    ``redis-replica-1``)."""
    return inst.name.replace("-exporter", "")


def _exporter_addrs(ctx) -> list[str]:
    return [f"redis://{i.name}:{i.service.port.container}" for i in ctx.instances_of("redis")
            if not i.service.name.endswith("-exporter")]


def _exporter(name: str, of: Service) -> Service:
    """The exporter beside each instance of ``of``: placed as it is."""
    return Service(name, "data", of.group, "redis-exporter", EXPORTER_UID, secrets=(_EXPORTER_MAP,),
                   serves_clients=False, metrics=Metrics(EXPORTER_PORT), instances=of.instances,
                   placement=of.placement, spread_from=of.spread_from, waits=(Wait(of.name, "service_started"),))


def _exporter_service(ctx, inst) -> dict[str, Any]:
    port = 26379 if inst.service.name == "redis-sentinel-exporter" else 6379
    return {"command": [f"-web.listen-address=:{EXPORTER_PORT}", f"-redis.addr=redis://{watched(inst)}:{port}",
                        f"-redis.user={EXPORTER_USER}", "-redis.password-file=/run/secrets/redis_exporter_passwords.json"],
            "mem_limit": "64m"}


def _master_as_deployed(ctx):
    return ctx.announced(ctx.instances_of("redis", "redis")[0])


def compose_service(ctx, inst) -> dict[str, Any]:
    settings = ctx.section("redis")
    if inst.service.name.endswith("-exporter"):
        return _exporter_service(ctx, inst)
    me = ctx.announced(inst)
    if inst.service.name == "redis-sentinel":
        return {"command": ["sh", f"{SENTINEL_CONF}/entrypoint.sh", me.host, str(me.port)],
                "environment": {"REDIS_MASTER_NAME": settings.master_name, "REDIS_QUORUM": str(settings.quorum),
                                "REDIS_DOWN_AFTER_MS": str(settings.down_after_ms),
                                "REDIS_FAILOVER_TIMEOUT_MS": str(settings.failover_timeout_ms)},
                "volumes": [f"sentinel-{inst.number}:/data"], "mem_limit": "64m"}
    server = ["redis-server", f"{CONF}/redis.conf", "--replica-announce-ip", me.host,
              "--replica-announce-port", str(me.port)]
    doc: dict[str, Any] = {"mem_limit": f"{settings.memory_limit_mb}m"}
    sentinels = ctx.endpoints("redis", "redis-sentinel")
    if sentinels:
        # node.sh asks the Sentinels who the master is now and adds --replicaof itself.
        doc["command"] = ["sh", f"{CONF}/node.sh", me.host, str(me.port), *server]
        doc["environment"] = {
            "REDIS_SENTINELS": " ".join(str(e) for e in sentinels),
            "REDIS_NODES": " ".join(str(ctx.announced(i)) for i in ctx.instances_of("redis", "redis")
                                    + ctx.instances_of("redis", "redis-replica")),
            "REDIS_MASTER_AS_DEPLOYED": str(_master_as_deployed(ctx)),
            "REDIS_MASTER_NAME": settings.master_name, "REDIS_SENTINEL_WAIT_S": str(SENTINEL_WAIT_S)}
    elif inst.number is None:
        doc["command"] = server
    else:
        master = ctx.endpoints("redis", "redis")[0]
        doc["command"] = [*server, "--replicaof", master.host, str(master.port)]
    doc["volumes"] = ["redisdata:/data" if inst.number is None else f"redisdata-replica-{inst.number}:/data"]
    return doc


def template_context(ctx) -> dict[str, Any]:
    return {"env": ctx.env, "redis": ctx.section("redis"), "master": _master_as_deployed(ctx),
            "exporter_addrs": _exporter_addrs(ctx)}


def _checks():
    from shipyard.components.redis import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


def _describe(settings, containers):
    from shipyard.components.redis.status import describe

    return describe(settings, containers)


# Where they run: the nodes on the `cache` hosts (the inventory's `data` hosts unless it names
# them), the master as first deployed on the first and each replica on the next ones, so that a
# replica outlives its master's host; a Sentinel on each `control` host (beside Consul's, etcd's
# and Vault's servers), so that losing one host leaves a majority of them to fail over.
_MASTER = Service("redis", "data", "cache", "redis", UID, secrets=(_AUTH, _NODE_SENTINEL_AUTH, _EXPORTER_ACL),
                  config_dir="redis", port=Port(6379, "redis", 6379, _PORT_DOC), health=_NODE_HEALTH, placement="once")
# Replicas and Sentinels only wait for `redis` to start: after a failover `redis` is a replica,
# and its node.sh asks the Sentinels, so they must start beside it.
_REPLICA = Service("redis-replica", "data", "cache", "redis", UID, secrets=(_AUTH, _NODE_SENTINEL_AUTH, _EXPORTER_ACL),
                   config_dir="redis", port=Port(6379, "redis", 6379, _PORT_DOC, publish="remote"), health=_NODE_HEALTH,
                   instances=lambda s: s.redis.replicas, placement="spread", spread_from=1, consumers_wait=None,
                   waits=(Wait("redis", "service_started"),))
_SENTINEL = Service("redis-sentinel", "data", "control", "redis", UID,
                    secrets=(SecretFile("redis_password", "redis_password",
                                        rotation=Rotation(apply=("sh", f"{SENTINEL_CONF}/rotate.sh"))), _SENTINEL_AUTH,
                             _EXPORTER_RAW), config_dir="sentinel",
                    port=Port(26379, "sentinel", 26379, "first host port of the Sentinels (published only for other hosts)",
                              publish="remote", instance_offset=-1),
                    health=Health(("sh", f"{SENTINEL_CONF}/health.sh"), start_period_s=30),
                    instances=lambda s: s.redis.sentinels, placement="spread", waits=(Wait("redis", "service_started"),))


COMPONENT = Component(
    name="redis",
    folder=Path(__file__).parent,
    settings={"redis": RedisSettings},
    images=(Image("redis", official="redis:7.0.15-bookworm", local="shipyard/redis:7.0",
                  local_context="shipyard/components/redis/image"),
            # Debian bookworm ships 1.45.0: the same version upstream.
            Image("redis-exporter", official="oliver006/redis_exporter:v1.45.0", local="shipyard/redis-exporter:1.45",
                  local_context="shipyard/components/redis/exporter-image")),
    config_dirs=(ConfigDir("redis", CONF), ConfigDir("sentinel", SENTINEL_CONF)),
    services=(_MASTER, _REPLICA, _SENTINEL, _exporter("redis-exporter", _MASTER),
              _exporter("redis-replica-exporter", _REPLICA), _exporter("redis-sentinel-exporter", _SENTINEL)),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
    commands=COMMANDS,
    describe=_describe,
)
