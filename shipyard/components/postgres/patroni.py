"""PostgreSQL under Patroni (docs/data-tier.md).

Pure: what a node's Patroni config holds, its secret fragments, and the etcd access Patroni gets.
Deployed by the component's services; tests/patroni/ boots three
real nodes from this very config.

Patroni reads a *directory* as its config, merging every ``*.yml`` in it in name order
(patroni/config.py, ``_load_config_path``). That is how its passwords stay out of the
environment and out of the rendered config: ``patroni.yml`` (rendered, no secret) and one small
fragment per secret (``SECRETS``, rendered like every secret file, mode 0400) are linked into one
directory, which is the path Patroni is started with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard.component import SecretFile
from shipyard.components.postgres import pgbackrest

TEMPLATE = "postgres/patroni.yml.j2"
# Debian's PostgreSQL 15 (the local image and the host's package); the official image's
# binaries are on PATH at /usr/lib/postgresql/15/bin as well.
BIN_DIR = "/usr/lib/postgresql/15/bin"
API_PORT = 8008  # Patroni's REST API: for its peers and the host's tools; published only for peers on other hosts
ETCD_CLIENT_PORT = 2379
# Patroni's keys live under <namespace><scope>/ in etcd; its etcd role may touch nothing else.
NAMESPACE = "/patroni/"
ETCD_USER = "patroni"
ETCD_ROLE = "patroni"
REPLICATION_USER = "replicator"  # the name clusters made before Patroni used as well
REWIND_USER = "rewinder"  # pg_rewind's: EXECUTE on four file functions, no superuser (Patroni grants them)
API_USER = "patroni"  # changes through the REST API (switchover, restart) need it; reads do not

# The fragments Patroni merges with patroni.yml (a deep merge: they add keys, order does not
# matter). postgres_password and replication_password are also delivered raw (rotate.sh).
SECRETS = (
    SecretFile("patroni-superuser.yml", "postgres_password", template="secrets/patroni-superuser.yml.j2"),
    SecretFile("patroni-replication.yml", "replication_password", template="secrets/patroni-replication.yml.j2"),
    SecretFile("patroni-rewind.yml", "pg_rewind_password", template="secrets/patroni-rewind.yml.j2"),
    SecretFile("patroni-etcd.yml", "patroni_etcd_password", template="secrets/patroni-etcd.yml.j2"),
    SecretFile("patroni-restapi.yml", "patroni_api_password", template="secrets/patroni-restapi.yml.j2"),
)


def scope(env: str) -> str:
    """The Patroni cluster's name (one per environment)."""
    return f"shipyard-{env}"


def key_prefix(env: str) -> str:
    """Every etcd key Patroni reads or writes starts with this."""
    return f"{NAMESPACE}{scope(env)}/"


@dataclass(frozen=True)
class NodeAddresses:
    """Where one node listens and how its peers reach it (host:port each). The connect
    addresses are None in a file shared by every node (each gets its own from its environment)."""

    pg_listen: str
    pg_connect: str | None
    api_listen: str
    api_connect: str | None


@dataclass(frozen=True)
class NodePaths:
    """A node's directories: ``data_dir`` (PGDATA), ``conf_dir`` (the rendered pg_hba.conf),
    ``run_dir`` (the passfile Patroni writes and PostgreSQL's socket: private to the node),
    ``post_bootstrap`` (the command run once after initdb, or None)."""

    data_dir: str
    conf_dir: str
    run_dir: str
    bin_dir: str = BIN_DIR
    post_bootstrap: str | None = None


def secret_names() -> tuple[str, ...]:
    return tuple(s.secret for s in SECRETS)


def template_names() -> dict[str, str]:
    """The role names the secret fragments fill in."""
    return {"replication_user": REPLICATION_USER, "rewind_user": REWIND_USER, "etcd_user": ETCD_USER,
            "api_user": API_USER}


def config_vars(env: str, settings, node: str | None, addresses: NodeAddresses, paths: NodePaths,
                etcd_hosts: list[str], archive: bool = True) -> dict[str, Any]:
    """The variables of templates/postgres/patroni.yml.j2 for one node (``node`` None: for every
    node, each naming itself through its environment). ``settings``: the ``postgres`` section.
    Addresses and paths are arguments so the tests run real nodes from this very template on
    loopback ports and temporary directories.
    ``archive``: the WAL archive and restore through pgBackRest (pgbackrest.py)."""
    patroni = settings.patroni
    wal = ({"command": pgbackrest.archive_command(env), "restore_command": pgbackrest.restore_command(env),
            "timeout_s": pgbackrest.ARCHIVE_TIMEOUT_S} if archive else None)
    return {"env": env, "scope": scope(env), "namespace": NAMESPACE, "node": node, "postgres": settings,
            "addresses": addresses, "paths": paths, "etcd_hosts": etcd_hosts, "etcd_user": ETCD_USER,
            "archive": wal,
            "dcs": {"ttl": patroni.ttl_s, "loop_wait": patroni.loop_wait_s, "retry_timeout": patroni.retry_timeout_s,
                    "synchronous_mode": patroni.synchronous,
                    "failsafe_mode": patroni.failsafe,
                    "maximum_lag_on_failover": patroni.maximum_lag_on_failover_mb * 1024 * 1024},
            **template_names()}
