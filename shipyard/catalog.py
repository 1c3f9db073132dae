"""Typed component specs: what each component needs, independent of any environment.

The catalog says which tier and host role a component belongs to, which secrets it reads
(and as which uid, since secret files are mode 0400), which config directory it mounts,
what it depends on, and which port it serves. ``render`` turns these + settings into compose
documents; ``apply`` delivers secrets and brings tiers up in ``TIERS`` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Tier = Literal["data", "app", "edge"]
TIERS: tuple[Tier, ...] = ("data", "app", "edge")

# uids that read secret files. 999 is what the official postgres and redis images use (the
# local images are built to match); 10001 is the task platform image's user.
UID_POSTGRES = 999
UID_REDIS = 999
UID_TASKPLATFORM = 10001

SECRET_NAMES = ("postgres_password", "redis_password", "jwt_signing_key", "replication_password")


@dataclass(frozen=True)
class SecretFile:
    """A file under /run/secrets/ of one service, made from a stored secret.

    ``template`` (under templates/) renders the file from the secret values when the consumer
    needs a native format (Redis reads its password through an ``include``d config file).
    """

    target: str
    secret: str
    template: str | None = None


@dataclass(frozen=True)
class Component:
    name: str  # compose service name
    tier: Tier
    role: str  # inventory group whose hosts run it
    port: int | None  # port it serves inside its container
    uid: int  # uid that must be able to read its secret files
    secrets: tuple[SecretFile, ...] = ()
    config_dir: str | None = None  # rendered dir under compose/<env>/<host>/ mounted read-only
    depends_on: tuple[str, ...] = ()
    hot_reload: bool = False  # config changes are picked up live: they must not recreate it
    one_shot: bool = False  # runs to completion once per deploy (migrations)
    # Set for components that run as N numbered instances (``<name>-1`` ...): a function of the
    # settings giving N. Each instance is its own compose service (own volume, own slot).
    instances: str | None = None


# Every PostgreSQL node holds the same files, since any of them may become the primary: the
# superuser password (the image's initdb, operator psql), the raw replication password (the
# initdb script creating the role) and a passfile for it (cloning, streaming, health checks).
_PG_NODE_SECRETS = (SecretFile("postgres_password", "postgres_password"),
                    SecretFile("replication_password", "replication_password"),
                    SecretFile("replication_pgpass", "replication_password", template="postgres/pgpass.j2"))

_APP_SECRETS = (SecretFile("postgres_password", "postgres_password"),
                SecretFile("redis_password", "redis_password"))

COMPONENTS: tuple[Component, ...] = (
    # The first primary. Which node is primary is decided by the data (standby.signal), not the
    # service name: after `make pg-promote` this one runs as a replica of another.
    Component("postgres", "data", "data", 5432, UID_POSTGRES, secrets=_PG_NODE_SECRETS, config_dir="postgres"),
    # Streaming replicas: cloned from the primary with pg_basebackup -R, one slot each. They
    # authenticate as the replication role through a passfile, so no password sits in PGDATA.
    Component("postgres-replica", "data", "data", 5432, UID_POSTGRES, secrets=_PG_NODE_SECRETS,
              config_dir="postgres", depends_on=("postgres",), instances="postgres.replicas"),
    Component("redis", "data", "data", 6379, UID_REDIS,
              secrets=(SecretFile("redis_auth.conf", "redis_password", template="redis/auth.conf.j2"),),
              config_dir="redis"),
    # Scheduled base backups (pg_basebackup with the WAL needed to make each one consistent)
    # into their own volume, newest postgres.backup_keep kept. Streams as the replication role.
    Component("postgres-backup", "data", "data", None, UID_POSTGRES,
              secrets=(SecretFile("replication_pgpass", "replication_password", template="postgres/pgpass.j2"),),
              config_dir="postgres", depends_on=("postgres",)),
    Component("redis-replica", "data", "data", 6379, UID_REDIS,
              secrets=(SecretFile("redis_auth.conf", "redis_password", template="redis/auth.conf.j2"),),
              config_dir="redis", depends_on=("redis",), instances="redis.replicas"),
    # Sentinel rewrites its own config file (it records the current master, peers, epochs), so
    # each Sentinel keeps it in its own volume, seeded from the rendered one on first start only.
    # Its rendered files are a config dir of their own: tuning Sentinel leaves the Redis nodes running.
    Component("redis-sentinel", "data", "data", 26379, UID_REDIS,
              secrets=(SecretFile("redis_password", "redis_password"),),
              config_dir="sentinel", depends_on=("redis",), instances="redis.sentinels"),
    Component("migrate", "app", "app", None, UID_TASKPLATFORM, secrets=(_APP_SECRETS[0],),
              depends_on=("postgres",), one_shot=True),
    Component("api", "app", "app", 8000, UID_TASKPLATFORM,
              secrets=_APP_SECRETS + (SecretFile("jwt_signing_key", "jwt_signing_key"),),
              config_dir="taskplatform", depends_on=("postgres", "redis"), hot_reload=True),
    Component("worker", "app", "app", None, UID_TASKPLATFORM, secrets=_APP_SECRETS,
              config_dir="taskplatform", depends_on=("postgres", "redis"), hot_reload=True),
    Component("edge", "edge", "edge", 80, 0, config_dir="nginx", depends_on=("api",)),
)


def component(name: str) -> Component:
    """The spec of a compose service; ``postgres-replica-2`` is an instance of ``postgres-replica``."""
    for spec in COMPONENTS:
        if spec.name == name:
            return spec
    base, _, number = name.rpartition("-")
    if number.isdigit():
        for spec in COMPONENTS:
            if spec.name == base and spec.instances:
                return spec
    raise KeyError(name)


def instance_number(name: str) -> int | None:
    """2 for ``postgres-replica-2``; None for a component that is not numbered."""
    spec = component(name)
    return int(name.rpartition("-")[2]) if spec.instances else None


def components_in_tier(tier: Tier) -> tuple[Component, ...]:
    return tuple(c for c in COMPONENTS if c.tier == tier)
