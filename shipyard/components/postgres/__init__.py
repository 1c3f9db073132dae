"""PostgreSQL under Patroni: the nodes ``postgres`` and ``postgres.replicas`` more
(``postgres-replica-N``), the ``postgres-setup`` job and one exporter beside each node
(``postgres-exporter`` for ``postgres``, ``postgres-replica-exporter-N`` for
``postgres-replica-N``), scraped by Prometheus on the project network (nothing published).

Every node runs Patroni (``files/postgres/patroni-node.sh``), which decides its role: one
rendered ``patroni.yml`` for every node (patroni.py), each node's name and addresses in its
environment, its passwords in secret fragments; the DCS is the ``etcd`` component, Patroni's
access to it made by etcd's live setup (etcd_access.py); the health check reads Patroni's REST
API (port 8008, on the project network only while the nodes share a host, changes need the
credentials of ``patroni-restapi.yml``). pgBackRest archives the WAL and takes the backups on the leader
(pgbackrest.py). Which node leads changes at run time (a failover, `make pg-promote`): the
service names stay, so the API and workers' host list does. docs/data-tier.md.

Several data hosts: ``postgres`` on the first, the replicas round-robin from the second on. Once
the nodes span hosts each announces its host's address and published ports (PostgreSQL's for
streaming, the REST API's and its own pgBackRest server's for its peers), and the repository
volume is served from the first host by ``pgbackrest-repo`` (pgBackRest's TLS server) to every
node: any node may lead, on any host. docs/data-tier.md, "Across hosts".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.component import (Component, ConfigDir, Health, Image, LiveSetup, Metrics, PeerPort, Port, Rotation, SecretFile,
                                 Service, Wait)
from shipyard.components.postgres import patroni, pgbackrest
from shipyard.components.postgres.commands import COMMANDS, plan_config, reconcile, reconcile_ahead
from shipyard.components.postgres.settings import PostgresSettings

UID = 999  # the official postgres image's uid (the local image is built to match)
CONF = "/etc/postgresql/shipyard"
EXPORTER_CONF = "/etc/postgres-exporter"
EXPORTER_PORT = 9187
EXPORTER_UID = 65534  # nobody, as in the official exporter image
# The exporters' own role: LOGIN, member of pg_monitor, nothing else (files/postgres/monitor-setup.sh).
EXPORTER_ROLE = "postgres_exporter"
# Where PostgreSQL keeps its data: a directory inside the volume (mounted at its parent), so
# the volume's root stays root's to hand over (patroni-node.sh) and PGDATA can be made 0700.
PGDATA = "/var/lib/postgresql/data/pgdata"
# Patroni's passfile and PostgreSQL's socket: the node's own, not shared.
PATRONI_RUN = "/var/run/postgresql"

# Every node holds the same files, since any of them may lead: the superuser password and the
# raw replication password (rotate.sh sets a rotated one), and a passfile for the replication
# role (the health, status and verify queries log in as it). A rotated password is set in the
# running cluster (files/postgres/rotate.sh, on the leader; the replicas receive it through the
# WAL): no node restarts. A passfile is read at every connection, so its new content is all it takes.
_PGPASS = SecretFile("replication_pgpass", "replication_password", template="secrets/pgpass.j2", rotation=Rotation())
# pgBackRest's way in: the superuser over the node's own socket (backups start and stop through
# it), its password in a passfile read at each connection.
SUPERUSER_PGPASS = SecretFile("superuser_pgpass", "postgres_password", template="secrets/superuser-pgpass.j2",
                               rotation=Rotation())
# How often a node's backup loop looks whether it leads and a backup is due.
BACKUP_CHECK_S = 30
# The repository server's pgBackRest configuration (templates/postgres/pgbackrest-repo.conf.j2).
REPO_CONFIG_NAME = "pgbackrest-repo.conf"
# The image every node runs (PostgreSQL + Patroni + pgBackRest), the setup job and restores too.
NODE_IMAGE = "postgres-patroni"

# Patroni (PID 1 in a node) re-reads its configuration directory, the secret fragments with it,
# on SIGHUP: a rotated password it uses reaches it without a restart. The role's password itself
# changes where the server is: rotate.sh above (superuser, replicator, on the primary), etcd's
# live setup (Patroni's etcd user; failsafe mode bridges the moments between the two), the REST
# API's is Patroni's own. The rewind role's is set by Patroni at the cluster's bootstrap only: a
# new one recreates the nodes (it is read at start).
_PATRONI_RELOAD = Rotation(apply=("bash", "-c", "kill -HUP 1"))
_PATRONI_RELOADS = frozenset({"postgres_password", "replication_password", "patroni_api_password",
                              "patroni_etcd_password"})



# pgBackRest's certificate, key and CA (one bundle, issued from the environment's pgBackRest CA)
# for mutual TLS between the nodes and the repository's server: only once the nodes span hosts.
_PGBACKREST_TLS = tuple(SecretFile(name, pgbackrest.TLS, template=f"secrets/pgbackrest-{part}.pem.j2",
                                   when=pgbackrest.spans_hosts)
                        for part, name in pgbackrest.TLS_FILES.items())

_NODE_SECRETS = (
    SecretFile("postgres_password", "postgres_password",
               rotation=Rotation(apply=("bash", f"{CONF}/rotate.sh", "superuser", "postgres_password"))),
    SecretFile("replication_password", "replication_password",
               rotation=Rotation(apply=("bash", f"{CONF}/rotate.sh", "replicator", "replication_password"))),
    _PGPASS,
    SUPERUSER_PGPASS,
    *(SecretFile(s.target, s.secret, template=s.template,
                 rotation=_PATRONI_RELOAD if s.secret in _PATRONI_RELOADS else None) for s in patroni.SECRETS),
    *_PGBACKREST_TLS)
# Patroni's REST API on the node says (files/postgres/patroni-health.py). A replica's first start
# clones the leader: its failing probes count only after that long.
_NODE_HEALTH = Health(("python3", f"{CONF}/patroni-health.py"), start_period_s=120)
_PORT_DOC = "host port PostgreSQL publishes on (replica N: this + N, published only for other hosts)"
# What the nodes reach of each other: PostgreSQL's port (a replica streams from the leader), and
# Patroni's REST API (a candidate asks the others' WAL positions before it promotes itself; the
# deploy's tools use it inside each node). Published, on the hosts' private addresses, only once
# the nodes span hosts; a change through the API needs its credentials.
_NODE_PORT = dict(container=5432, setting="postgres", default=5432, description=_PORT_DOC, peers_reach=True)
_API_PEER_PORT = PeerPort(patroni.API_PORT, ("tcp",), "Patroni's REST API, for the nodes on other hosts")
# Each node's own pgBackRest server (once the nodes span hosts): the repository's side starts the
# backups through it.
_PGBACKREST_PEER_PORT = PeerPort(pgbackrest.NODE_SERVER_PORT, ("tcp",),
                                 "pgBackRest's server of the node, for backups from the repository's host")
_NODE_PEER_PORTS = (_API_PEER_PORT, _PGBACKREST_PEER_PORT)
# The exporters' password: the setup job sets it (as the superuser), the exporters read it at
# start; a rotated one re-runs the job and then recreates them (they wait for it).
_EXPORTER_SECRET = SecretFile("pg_exporter_password", "pg_exporter_password")
_SETUP_SECRETS = (SecretFile("postgres_password", "postgres_password"), _EXPORTER_SECRET)


# The replicas start on the data host after the first node's (round-robin from there).
_REPLICAS_FROM = 1


def _exporter(name: str, instances=None) -> Service:
    """The exporter of one node, placed as its node is: its own role, its node's metrics, nothing published."""
    return Service(name, "data", "data", "postgres-exporter", EXPORTER_UID, secrets=(_EXPORTER_SECRET,),
                   config_dir="postgres-exporter", serves_clients=False, metrics=Metrics(EXPORTER_PORT),
                   instances=instances, placement="spread" if instances else "once", spread_from=_REPLICAS_FROM,
                   waits=(Wait("postgres-setup", "service_completed_successfully"),))


def slot_name(node: str) -> str:
    """The physical replication slot a node streams on (slot names allow [a-z0-9_])."""
    return node.replace("-", "_")


def nodes(ctx) -> tuple[str, ...]:
    """Every PostgreSQL server: ``postgres`` (the first primary) and its replicas."""
    return tuple(i.name for i in _node_instances(ctx.topology))


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
    """Each service's environment holds only what it reads: tuning the backups re-creates the
    nodes (their loop reads it), not the exporters."""
    settings = ctx.section("postgres")
    if inst.service.name.endswith("-exporter"):
        return _exporter_service(ctx, inst)
    if inst.service.name == pgbackrest.REPO_SERVICE:
        return _repository_server(ctx)
    # The nodes (the setup job finds the primary among them) as the repository's host — where
    # the setup job runs — reaches them: by service name there, at their host's address elsewhere.
    repository = repository_host(ctx.topology)
    env = {"PGDATA": PGDATA,
           "PG_NODES": " ".join(n.name if n.host.name == repository.name else str(ctx.topology.address(n, repository))
                                for n in _node_instances(ctx.topology))}
    if inst.service.name == "postgres-setup":
        env |= {"PG_SUPERUSER": settings.user, "PG_EXPORTER_ROLE": EXPORTER_ROLE}
        return {"environment": env, "command": ["bash", f"{CONF}/monitor-setup.sh"]}
    return _patroni_node(ctx, inst, env)


def _volume(inst) -> str:
    return "pgdata" if inst.number is None else f"pgdata-replica-{inst.number}"


def _patroni_node(ctx, inst, env: dict[str, str]) -> dict[str, Any]:
    """A node: patroni-node.sh (as root, then Patroni as postgres). Its name and
    the addresses its peers reach it at are Patroni's environment variables, laid over the one
    rendered patroni.yml; nothing secret is in the environment."""
    settings = ctx.section("postgres")
    env |= {"PG_NODE": inst.name, "PG_DATABASE": settings.database,
            "PG_SUPERUSER": settings.user,  # rotate.sh
            "PG_REPLICA_MAX_LAG_BYTES": str(settings.replica_max_lag_mb * 1024 * 1024),
            "PATRONI_NAME": inst.name,
            # Where the other nodes reach it: the service name on one host; its host's address and
            # published ports once the nodes span hosts.
            "PATRONI_RESTAPI_CONNECT_ADDRESS": f"{ctx.peer_advertised(inst) or inst.name}:{patroni.API_PORT}",
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS": str(ctx.announced(inst)) if ctx.topology.peers_span_hosts(inst)
                                                  else f"{inst.name}:5432"}
    served = pgbackrest.spans_hosts(ctx.settings)
    # pgBackRest: the config every node reads (archive_command names only the stanza), the
    # passfile, and the schedule of the backup loop patroni-node.sh starts beside Patroni. Once
    # the repository is a server (the nodes span hosts), the node runs its own pgBackRest server
    # too, and its loop only records the newest backup's time on the leader: the repository's
    # side takes the backups.
    env |= {"PGBACKREST_CONFIG": f"{CONF}/{pgbackrest.CONFIG_NAME}", "PGBACKREST_STANZA": pgbackrest.stanza(ctx.env),
            "PG_SUPERUSER_PASSFILE": f"/run/secrets/{SUPERUSER_PGPASS.target}",
            "PG_BACKUP_INTERVAL_S": str(settings.backup_interval_s),
            "PG_BACKUP_FULL_INTERVAL_S": str(settings.backup_full_interval_s),
            "PG_BACKUP_CHECK_S": str(BACKUP_CHECK_S),
            **({"PG_BACKUP_REPOSITORY": "remote"} if served else {})}
    return {"environment": env, "mem_limit": f"{settings.memory_limit_mb}m",
            "command": ["bash", f"{CONF}/patroni-node.sh"],
            # Patroni stops PostgreSQL (fast shutdown) and gives up the leader lock on SIGTERM.
            "stop_signal": "SIGTERM", "stop_grace_period": "30s", "shm_size": "128m",
            # A node cut off from the network must see etcd and its peers fail within
            # retry_timeout_s, and demote itself before the leader key expires. The calls time out
            # in time; name lookups did not: the engine's resolver gone, each lookup of a peer
            # waited the resolver's 5 s x 2 attempts, and the cut-off leader kept taking writes 32 s
            # (tests/e2e/test_patroni_drills.py saw two primaries). One second, one attempt.
            "dns_opt": ["timeout:1", "attempts:1"],
            # The repository: one volume, the same path in every node of its host (whichever leads
            # writes it); once the nodes span hosts, the volume of the repository's server.
            "volumes": [f"{_volume(inst)}:/var/lib/postgresql/data",
                        *([] if served else [f"{pgbackrest.VOLUME}:{pgbackrest.REPO_PATH}"])]}


def _repository_server(ctx) -> dict[str, Any]:
    """The repository's server (the nodes span hosts): pgbackrest-repo.sh (as root, then as
    postgres) serves the volume over TLS and runs the backup schedule."""
    settings = ctx.section("postgres")
    return {"environment": {"PGBACKREST_CONFIG": f"{CONF}/{REPO_CONFIG_NAME}",
                            "PGBACKREST_STANZA": pgbackrest.stanza(ctx.env), "PG_BACKUP_REPOSITORY": "server",
                            "PG_BACKUP_INTERVAL_S": str(settings.backup_interval_s),
                            "PG_BACKUP_FULL_INTERVAL_S": str(settings.backup_full_interval_s),
                            "PG_BACKUP_CHECK_S": str(BACKUP_CHECK_S)},
            "command": ["bash", f"{CONF}/pgbackrest-repo.sh"], "mem_limit": "256m",
            # A node's container gone (a failover drill, a host down), its name no longer resolves
            # and each lookup waited 5 s x 2 attempts x (A, AAAA): a backup that reached the
            # others took 146 s. One second, one attempt, as the nodes' own.
            "dns_opt": ["timeout:1", "attempts:1"],
            "stop_signal": "SIGTERM", "stop_grace_period": "30s",
            "volumes": [f"{pgbackrest.VOLUME}:{pgbackrest.REPO_PATH}"]}


def repository_host(topo):
    """The host holding pgBackRest's repository (the ``pgbackrest`` volume): the first node's,
    the first data host."""
    return topo.instances_of("postgres", "postgres")[0].host


def template_context(ctx) -> dict[str, Any]:
    # The role names are for the secret fragments (patroni.SECRETS), the rest for patroni.yml
    # and pgbackrest.conf; the PEM helpers for pgBackRest's TLS files (templates/secrets/).
    from shipyard.components.postgres import certificates

    return {**patroni_config_vars(ctx), **pgbackrest_config_vars(ctx), "env": ctx.env, "postgres": ctx.section("postgres"),
            **patroni.template_names(), "pgbackrest_cert_of": certificates.cert_of,
            "pgbackrest_key_of": certificates.key_of, "pgbackrest_ca_of": certificates.ca_of}


def pgbackrest_config_vars(ctx) -> dict[str, Any]:
    """The variables of pgbackrest.conf (and pgbackrest-repo.conf) as a deploy runs it: in each
    node's container (the same paths in every node and in the restore container). Once the nodes
    span hosts, where this host reaches the repository's server, and where the repository's host
    reaches each node's."""
    remote = None
    if pgbackrest.spans_hosts(ctx.settings):
        repo = ctx.topology.instances_of("postgres", pgbackrest.REPO_SERVICE)[0]
        at = ctx.address(repo)
        remote = pgbackrest.remote_vars(repo=(at.host, at.port),
                                        nodes=tuple(_node_server(ctx.topology, node, repo.host)
                                                    for node in _node_instances(ctx.topology)))
    return pgbackrest.config_vars(ctx.env, ctx.section("postgres"), data_dir=PGDATA, socket_dir=PATRONI_RUN, port=5432,
                                  remote=remote)


def _node_instances(topo):
    return topo.instances_of("postgres", "postgres") + topo.instances_of("postgres", "postgres-replica")


def _node_server(topo, node, from_host) -> tuple[str, int]:
    """Where ``from_host`` reaches a node's own pgBackRest server: its service name on the same
    host, its host's address (the peer port, published once the nodes span hosts) from another."""
    if node.host.name == from_host.name:
        return node.name, pgbackrest.NODE_SERVER_PORT
    return node.host.address, pgbackrest.NODE_SERVER_PORT


def patroni_config_vars(ctx, node: str | None = None) -> dict[str, Any]:
    """The variables of patroni.yml as a deploy runs it: in each node's container, reached by its service name (``node`` None: one file for every node, each
    naming itself in its environment), etcd wherever the topology places its members."""
    addresses = patroni.NodeAddresses(
        pg_listen="*:5432", pg_connect=f"{node}:5432" if node else None,
        api_listen=f":{patroni.API_PORT}", api_connect=f"{node}:{patroni.API_PORT}" if node else None)
    paths = patroni.NodePaths(data_dir=PGDATA, conf_dir=CONF, run_dir=PATRONI_RUN,
                              post_bootstrap=f"bash {CONF}/patroni-post-bootstrap.sh")
    etcd = [str(e) for e in ctx.endpoints("etcd", "etcd")]
    # No permanent slot: pgBackRest archives through archive_command.
    return patroni.config_vars(ctx.env, ctx.section("postgres"), node, addresses, paths, etcd)


def _config_hash_part(settings, path: str, content: bytes) -> bytes:
    """A change of ``bootstrap.dcs`` (the dynamic configuration: timings and PostgreSQL
    parameters) recreates no node: Patroni reads it at the cluster's first start only, and the
    deploy's reconcile brings it to the running cluster, restarting node by node only what needs it."""
    if path == "postgres/patroni.yml":
        import yaml

        doc = yaml.safe_load(content)
        doc.get("bootstrap", {}).pop("dcs", None)
        return yaml.safe_dump(doc, sort_keys=True).encode()
    return content


def _checks():
    from shipyard.components.postgres import checks  # pytest and HTTP clients: loaded by `make verify` only

    return checks


def _issue_pgbackrest_tls(repo: Path, env: str, environ: dict[str, str] | None) -> str:
    from shipyard.components.postgres import certificates

    return certificates.issue_bundle(repo, env, environ)


def _preflight(settings, repo: Path) -> list[str]:
    from shipyard.components.postgres import certificates

    return certificates.preflight(settings, repo)


def _describe(settings, containers):
    from shipyard.components.postgres.status import describe

    return describe(settings, containers)


COMPONENT = Component(
    name="postgres",
    folder=Path(__file__).parent,
    settings={"postgres": PostgresSettings},
    images=(
            # PostgreSQL 15 alone, pulled (official) or built from Debian's packages (local): the
            # base the nodes' image is built on, run by no service itself.
            Image("postgres", official="postgres:15.10-bookworm", local="shipyard/postgres:15",
                  local_context="shipyard/components/postgres/image"),
            # What the nodes, the setup job and the restore container run: that PostgreSQL plus
            # Debian bookworm's patroni, python3-etcd and pgbackrest, built on the host under
            # either source (the official postgres image has no Patroni: docs/data-tier.md).
            Image(NODE_IMAGE, local="shipyard/postgres-patroni", build_context="shipyard/components/postgres/patroni-image",
                  build_base="postgres"),
            # Debian bookworm ships 0.11.1: the same version upstream.
            Image("postgres-exporter", official="prometheuscommunity/postgres-exporter:v0.11.1",
                  local="shipyard/postgres-exporter:0.11", local_context="shipyard/components/postgres/exporter-image")),
    config_dirs=(ConfigDir("postgres", CONF), ConfigDir("postgres-exporter", EXPORTER_CONF)),
    services=(
        # pgBackRest's repository as a TLS server, on the repository's host, once the nodes span
        # hosts (pgbackrest.py): every node archives into it and it takes the backups. Its port on
        # its host's private address (the nodes of every data host reach it); nothing else.
        Service(pgbackrest.REPO_SERVICE, "data", "data", NODE_IMAGE, UID, secrets=_PGBACKREST_TLS, config_dir="postgres",
                port=Port(container=pgbackrest.REPO_PORT, setting="pgbackrest_repo", default=pgbackrest.REPO_PORT,
                          description="host port of pgBackRest's repository server (on the data hosts' private "
                                      "network; only once the PostgreSQL nodes span hosts)", publish="hosts"),
                serves_clients=False, placement="once", scale=lambda s: 1 if pgbackrest.spans_hosts(s) else 0, uses=(),
                health=Health(("pgbackrest", f"--config={CONF}/{REPO_CONFIG_NAME}", "server-ping", "127.0.0.1"))),
        # The first node. Patroni decides which node leads: any of them may (the name stays).
        Service("postgres", "data", "data", NODE_IMAGE, UID, secrets=_NODE_SECRETS, config_dir="postgres",
                port=Port(**_NODE_PORT), peer_ports=_NODE_PEER_PORTS, health=_NODE_HEALTH, placement="once",
                waits=(Wait(pgbackrest.REPO_SERVICE),)),
        # The other nodes, replicas at first (Patroni clones them from the leader, one slot each).
        # They only wait for `postgres` to start: after a failover `postgres` is a replica itself,
        # healthy only once the new leader (one of these) runs — waiting for healthy would deadlock.
        Service("postgres-replica", "data", "data", NODE_IMAGE, UID, secrets=_NODE_SECRETS, config_dir="postgres",
                port=Port(**_NODE_PORT, publish="remote"), peer_ports=_NODE_PEER_PORTS, health=_NODE_HEALTH,
                instances=lambda s: s.postgres.replicas, placement="spread", spread_from=_REPLICAS_FROM,
                consumers_wait=None,
                waits=(Wait("postgres", "service_started"),)),
        # The exporters' role and the backup-time table, on the leader, as the superuser.
        Service("postgres-setup", "data", "data", NODE_IMAGE, UID, secrets=_SETUP_SECRETS, config_dir="postgres",
                one_shot=True, placement="once", serves_clients=False, waits=(Wait("postgres"),)),
        _exporter("postgres-exporter"),
        _exporter("postgres-replica-exporter", instances=lambda s: s.postgres.replicas),
    ),
    # etcd is Patroni's DCS.
    uses=("etcd",),
    compose_service=compose_service,
    template_context=template_context,
    checks=_checks,
    commands=COMMANDS,
    describe=_describe,
    # Once every node converged: bootstrap.dcs is read at the cluster's first start only, so each
    # deploy brings the running cluster's dynamic configuration to the settings' (PATCH /config)
    # and restarts the nodes a postmaster parameter needs, one at a time.
    live_setup=LiveSetup(reconcile, ahead=reconcile_ahead),
    live_plan=plan_config,
    config_hash_part=_config_hash_part,
    # pgBackRest's CA and the bundle it issues (certificates.py): used once the nodes span hosts.
    held_secrets=(pgbackrest.CA_CERT, pgbackrest.CA_KEY),
    issued_secrets={pgbackrest.TLS: _issue_pgbackrest_tls},
    # Before any host is touched: that bundle re-issued when the names it must hold changed.
    preflight=_preflight,
)
