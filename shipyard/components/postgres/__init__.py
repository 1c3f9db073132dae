"""PostgreSQL: the first primary ``postgres``, ``postgres.replicas`` streaming replicas, the
backup service (scheduled base backups + a continuous WAL archive), the ``postgres-setup`` job
and one exporter beside each node (``postgres-exporter`` for ``postgres``,
``postgres-replica-exporter-N`` for ``postgres-replica-N``), scraped by Prometheus on the
project network (nothing published).

Which node is the primary is decided by the data (standby.signal), not the service name:
after `make pg-promote` ``postgres`` runs as a replica of another node. Every node starts
through the same static ``files/postgres/node.sh``, driven by the environment below.

That is ``postgres.ha: scripts``, the default. ``postgres.ha: patroni`` (in progress, not
deployed yet): each node's Patroni config (``patroni_config_vars``, patroni.py) and Patroni's
etcd access (etcd_access.py), proven on real processes by tests/patroni/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import Component, ConfigDir, Health, Image, Metrics, Port, Rotation, SecretFile, Service, Wait
from shipyard.components.postgres import patroni
from shipyard.components.postgres.commands import COMMANDS
from shipyard.components.postgres.settings import PostgresSettings

UID = 999  # the official postgres image's uid (the local image is built to match)
CONF = "/etc/postgresql/shipyard"
EXPORTER_CONF = "/etc/postgres-exporter"
EXPORTER_PORT = 9187
EXPORTER_UID = 65534  # nobody, as in the official exporter image
# The exporters' own role: LOGIN, member of pg_monitor, nothing else (files/postgres/monitor-setup.sh).
EXPORTER_ROLE = "postgres_exporter"
# Where PostgreSQL keeps its data: a directory inside the volume (mounted at its parent), so
# the volume root can hold markers such as node.sh's rebuild marker.
PGDATA = "/var/lib/postgresql/data/pgdata"
# Patroni's passfile and PostgreSQL's socket (postgres.ha: patroni): the node's own, not shared.
PATRONI_RUN = "/var/run/postgresql"
# The physical slot the backup service's WAL archive streams on (no node is called that).
WAL_ARCHIVE_SLOT = "postgres_backup"
# A node retries its clone this many times, 2 s apart, before it exits naming the nodes it tried.
CLONE_ATTEMPTS = 15
# A failed scheduled backup (no primary answering, say mid-promotion) is retried this soon.
BACKUP_RETRY_S = 10

# Every node holds the same files, since any of them may become the primary: the superuser
# password (the image's initdb, operator psql), the raw replication password (the initdb
# script creating the role) and a passfile for it (cloning, streaming, health checks).
# A rotated password is set in the running cluster (files/postgres/rotate.sh, on the primary;
# the replicas receive it through the WAL): no node restarts. The passfile is read at every
# connection (cloning, streaming, backups), so its new content is all it takes.
_PGPASS = SecretFile("replication_pgpass", "replication_password", template="secrets/pgpass.j2", rotation=Rotation())
_NODE_SECRETS = (
    SecretFile("postgres_password", "postgres_password",
               rotation=Rotation(apply=("bash", f"{CONF}/rotate.sh", "superuser", "postgres_password"))),
    SecretFile("replication_password", "replication_password",
               rotation=Rotation(apply=("bash", f"{CONF}/rotate.sh", "replicator", "replication_password"))),
    _PGPASS)
# A replica's first start clones the primary: its failing probes count only after that long.
_NODE_HEALTH = Health(("bash", f"{CONF}/health.sh"), start_period_s=120)
_PORT_DOC = "host port PostgreSQL publishes on (replica N: this + N, published only for other hosts)"
# The exporters' password: the setup job sets it (as the superuser), the exporters read it at
# start; a rotated one re-runs the job and then recreates them (they wait for it).
_EXPORTER_SECRET = SecretFile("pg_exporter_password", "pg_exporter_password")
_SETUP_SECRETS = (SecretFile("postgres_password", "postgres_password"), _EXPORTER_SECRET)


def _exporter(name: str, instances=None) -> Service:
    """The exporter of one node: its own role, its node's metrics, nothing published."""
    return Service(name, "data", "data", "postgres-exporter", EXPORTER_UID, secrets=(_EXPORTER_SECRET,),
                   config_dir="postgres-exporter", serves_clients=False, metrics=Metrics(EXPORTER_PORT),
                   instances=instances, placement="spread" if instances else "each",
                   waits=(Wait("postgres-setup", "service_completed_successfully"),))


def slot_name(node: str) -> str:
    """The physical replication slot a node streams on (slot names allow [a-z0-9_])."""
    return node.replace("-", "_")


def nodes(ctx) -> tuple[str, ...]:
    """Every PostgreSQL server: ``postgres`` (the first primary) and its replicas."""
    return ctx.instance_names("postgres", "postgres") + ctx.instance_names("postgres", "postgres-replica")


def watched_node(inst) -> str:
    """The node an exporter instance watches: ``postgres-exporter`` → ``postgres``,
    ``postgres-replica-exporter-N`` → ``postgres-replica-N``."""
    return inst.name.replace("-exporter", "")


def _exporter_service(ctx, inst) -> dict[str, Any]:
    node = watched_node(inst)
    # Flags, not the image's defaults: the same under both image sources. `node` names the
    # watched node on every series (its address changes with each container).
    return {"command": [f"--web.listen-address=:{EXPORTER_PORT}", f"--extend.query-path={EXPORTER_CONF}/queries.yaml",
                        f"--constantLabels=node={node}"],
            "environment": {"DATA_SOURCE_URI": f"{node}:5432/postgres?sslmode=disable",
                            "DATA_SOURCE_USER": EXPORTER_ROLE,
                            "DATA_SOURCE_PASS_FILE": "/run/secrets/pg_exporter_password"},
            "mem_limit": "64m"}


def compose_service(ctx, inst) -> dict[str, Any]:
    """The scripts' inputs go in each service's environment, only what it reads: tuning the
    backups re-creates the backup service, not the database nodes."""
    settings = ctx.section("postgres")
    if inst.service.name.endswith("-exporter"):
        return _exporter_service(ctx, inst)
    env = {"PGDATA": PGDATA, "PG_NODES": " ".join(nodes(ctx))}
    if inst.service.name == "postgres-setup":
        env |= {"PG_SUPERUSER": settings.user, "PG_EXPORTER_ROLE": EXPORTER_ROLE}
        return {"environment": env, "command": ["bash", f"{CONF}/monitor-setup.sh"]}
    if inst.service.name == "postgres-backup":
        env |= {"PG_BACKUP_INTERVAL_S": str(settings.backup_interval_s), "PG_BACKUP_KEEP": str(settings.backup_keep),
                "PG_BACKUP_RETRY_S": str(BACKUP_RETRY_S), "PG_WAL_ARCHIVE_SLOT": WAL_ARCHIVE_SLOT}
        return {"environment": env, "command": ["bash", f"{CONF}/backup.sh", "schedule"],
                "volumes": ["pgbackups:/backups"], "mem_limit": "256m"}
    env |= {"PG_NODE": inst.name, "SHIPYARD_ENV": ctx.env, "PG_CLONE_ATTEMPTS": str(CLONE_ATTEMPTS),
            "PG_SUPERUSER": settings.user,
            "PG_REPLICA_MAX_LAG_BYTES": str(settings.replica_max_lag_mb * 1024 * 1024)}
    doc: dict[str, Any] = {"environment": env, "mem_limit": f"{settings.memory_limit_mb}m"}
    doc["command"] = ["bash", f"{CONF}/node.sh", inst.name, "postgres", "-c", f"config_file={CONF}/postgresql.conf"]
    doc["stop_grace_period"] = "30s"
    doc["shm_size"] = "128m"
    volume = "pgdata" if inst.number is None else f"pgdata-replica-{inst.number}"
    doc["volumes"] = [f"{volume}:/var/lib/postgresql/data"]
    if inst.number is None:
        # Used only when this node initialises a new cluster (the image's entrypoint, first boot).
        doc["environment"] = {"POSTGRES_USER": settings.user, "POSTGRES_DB": settings.database,
                              "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password", **doc["environment"]}
        doc["volumes"].append("./postgres/initdb:/docker-entrypoint-initdb.d:ro")
    return doc


def template_context(ctx) -> dict[str, Any]:
    # The role names are for the secret fragments of the Patroni mode (patroni.SECRETS).
    return {"env": ctx.env, "postgres": ctx.section("postgres"), **patroni.template_names()}


def patroni_config_vars(ctx, node: str) -> dict[str, Any]:
    """The variables of one node's patroni.yml as a deploy would run it (``postgres.ha:
    patroni``; not deployed yet): in its container, reached by its service name, etcd on the
    control hosts' private addresses."""
    addresses = patroni.NodeAddresses(pg_listen="0.0.0.0:5432", pg_connect=f"{node}:5432",
                                      api_listen=f"0.0.0.0:{patroni.API_PORT}", api_connect=f"{node}:{patroni.API_PORT}")
    paths = patroni.NodePaths(data_dir=PGDATA, conf_dir=CONF, run_dir=PATRONI_RUN)
    etcd = [f"{h.address}:{patroni.ETCD_CLIENT_PORT}" for h in ctx.settings.hosts_with_role("control")]
    return patroni.config_vars(ctx.env, ctx.section("postgres"), node, addresses, paths, etcd)


def _checks():
    from shipyard.components.postgres import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


def _describe(settings, containers):
    from shipyard.components.postgres.status import describe

    return describe(settings, containers)


COMPONENT = Component(
    name="postgres",
    folder=Path(__file__).parent,
    settings={"postgres": PostgresSettings},
    images=(Image("postgres", official="postgres:15.10-bookworm", local="shipyard/postgres:15",
                  local_context="shipyard/components/postgres/image"),
            # Debian bookworm ships 0.11.1: the same version upstream.
            Image("postgres-exporter", official="prometheuscommunity/postgres-exporter:v0.11.1",
                  local="shipyard/postgres-exporter:0.11", local_context="shipyard/components/postgres/exporter-image")),
    config_dirs=(ConfigDir("postgres", CONF), ConfigDir("postgres-exporter", EXPORTER_CONF)),
    services=(
        # The first primary. Over TCP on purpose in its health check: during first-boot init
        # the entrypoint's temporary server listens on the socket only, which must not count.
        Service("postgres", "data", "data", "postgres", UID, secrets=_NODE_SECRETS, config_dir="postgres",
                port=Port(5432, "postgres", 5432, _PORT_DOC), health=_NODE_HEALTH),
        # Streaming replicas, cloned with pg_basebackup -R, one slot each. They only wait for
        # `postgres` to start: after a promotion `postgres` is a replica itself, healthy only
        # once the new primary (one of these) runs — waiting for healthy would deadlock.
        Service("postgres-replica", "data", "data", "postgres", UID, secrets=_NODE_SECRETS, config_dir="postgres",
                port=Port(5432, "postgres", 5432, _PORT_DOC, publish="remote"), health=_NODE_HEALTH,
                instances=lambda s: s.postgres.replicas, placement="spread", consumers_wait=None,
                waits=(Wait("postgres", "service_started"),)),
        # Scheduled base backups and the WAL archive, streamed as the replication role.
        Service("postgres-backup", "data", "data", "postgres", UID, secrets=(_PGPASS,), config_dir="postgres",
                serves_clients=False, placement="once",
                health=Health(("bash", f"{CONF}/backup.sh", "check"), start_period_s=120),
                # Its first backup records its time in the table the setup job makes.
                waits=(Wait("postgres", "service_started"), Wait("postgres-setup", "service_completed_successfully"))),
        # The exporters' role and the backup-time table, on the primary, as the superuser.
        Service("postgres-setup", "data", "data", "postgres", UID, secrets=_SETUP_SECRETS, config_dir="postgres",
                one_shot=True, placement="once", serves_clients=False, waits=(Wait("postgres"),)),
        _exporter("postgres-exporter"),
        _exporter("postgres-replica-exporter", instances=lambda s: s.postgres.replicas),
    ),
    compose_service=compose_service,
    template_context=template_context,
    # Its scripts reach the other nodes by service name: one host (Patroni's release will lift it).
    single_host=True,
    checks=_checks,
    commands=COMMANDS,
    describe=_describe,
)
