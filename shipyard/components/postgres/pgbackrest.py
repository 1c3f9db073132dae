"""Backups under Patroni: pgBackRest (Debian bookworm's 2.45).

Pure: what ``pgbackrest.conf`` holds, the stanza's name and the archive and restore commands
Patroni puts in PostgreSQL's configuration. docs/data-tier.md, "Backups with pgBackRest".

One repository (repo1), a directory on the volume ``pgbackrest``. On one host every PostgreSQL
node mounts it at the same path: whichever node leads archives its WAL into it
(``archive_command``) and takes the backups (``files/postgres/pgbackrest-node.py``), so a
failover changes nothing for the repository — one stanza, one archive, the timelines side by
side. Once the nodes span hosts the volume is served by a repository server (below) that every
node reaches over mutual TLS, and the backups start from there.
"""

from __future__ import annotations

from typing import Any

TEMPLATE = "postgres/pgbackrest.conf.j2"
CONFIG_NAME = "pgbackrest.conf"
# The repository: a named volume, mounted at this path in every node and in the restore container.
VOLUME = "pgbackrest"
REPO_PATH = "/var/lib/pgbackrest"
# zstd: about gzip's ratio at several times its speed (the Debian build links libzstd).
COMPRESS_TYPE = "zst"
# A segment is archived when full or after this long with writes in it: how much WAL a loss of
# every node (the archive is all that is left) may lose (the removed scripts mode's
# pg_receivewal streamed every record). `make pg-restore` forces a switch first (pgbackrest check), so a
# restore of a live cluster has everything committed before it.
ARCHIVE_TIMEOUT_S = 60


def stanza(env: str) -> str:
    """pgBackRest's name for the cluster (one per environment, as Patroni's scope)."""
    return f"shipyard-{env}"


def archive_command(env: str) -> str:
    """PostgreSQL's archive_command (on the leader; a replica archives nothing). The config
    file is the node's PGBACKREST_CONFIG (environment), so one command serves every node."""
    return f"pgbackrest --stanza={stanza(env)} archive-push %p"


def restore_command(env: str) -> str:
    """A replica's restore_command: WAL it can no longer stream (the leader recycled it) from
    the archive, instead of a re-clone."""
    return f'pgbackrest --stanza={stanza(env)} archive-get %f "%p"'


def config_vars(env: str, settings, *, data_dir: str, socket_dir: str, port: int, repo_path: str = REPO_PATH,
                lock_path: str | None = None, remote: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variables of templates/postgres/pgbackrest.conf.j2 (and pgbackrest-repo.conf.j2).
    ``settings``: the ``postgres`` section. Paths and the port are arguments so tests/patroni
    renders it for nodes on loopback; ``remote``: remote_vars, once the repository is a server."""
    return {"env": env, "pgbackrest": {
        "stanza": stanza(env), "repo_path": repo_path, "data_dir": data_dir, "socket_dir": socket_dir, "port": port,
        "superuser": settings.user, "retention_full": settings.backup_keep, "process_max": settings.backup_processes,
        "compress_type": COMPRESS_TYPE, "archive_timeout_s": ARCHIVE_TIMEOUT_S, "lock_path": lock_path,
        **(remote or {"tls": None})}}


# --- a repository server, once the nodes span hosts ----------------------------------------------
# A volume is one host's: once the nodes span hosts the repository is served by pgBackRest's own
# TLS server (`pgbackrest server`, 2.37+) in the service REPO_SERVICE on the repository's host,
# and every node reaches it over mutual TLS (repo1-host-type=tls). Backups are started from that
# side (pgBackRest refuses a backup on a node whose repository is remote): it reaches each node's
# own `pgbackrest server` and finds the primary itself, so a failover changes nothing there either.
REPO_SERVICE = "pgbackrest-repo"
REPO_PORT = 8432  # the repository's server (published on its host's private address)
NODE_SERVER_PORT = 8433  # each node's server (a peer port: published once the nodes span hosts)
# The certificate every party presents, and the name pgBackRest authorises per stanza
# (tls-server-auth=<CN>=<stanza>): one identity for the nodes and the repository, which hold the
# same secrets anyway (any node may lead; the superuser's password is on every one).
CLIENT_CN = "pgbackrest"
CA_CERT, CA_KEY = "pgbackrest_ca_cert", "pgbackrest_ca_key"
TLS = "pgbackrest_tls"
TLS_FILES = {"cert": "pgbackrest.crt", "key": "pgbackrest.key", "ca": "pgbackrest-ca.crt"}
# A standby's restore_command with the repository away fails after 2 x io-timeout (pgBackRest's
# default 60 s: two minutes of a replica not streaming); it streams meanwhile, so fail fast.
ARCHIVE_GET_IO_TIMEOUT_S = 3
# The repository's side: how long it tries to reach a node's server (io-timeout: the connect
# timeout of a TLS remote), so a backup while a node is down costs seconds, not minutes.
NODE_CONNECT_TIMEOUT_S = 5


def spans_hosts(settings) -> bool:
    """Whether the nodes run on more than one host (``settings``: the environment's): the
    replicas are placed from the data group's second host on, so any replica on a group of two
    or more hosts is elsewhere than the first node."""
    return settings.postgres.replicas > 0 and len(settings.hosts_with_role("data")) > 1


def remote_vars(*, repo: tuple[str, int] | None = None, nodes: tuple[tuple[str, int], ...] = (),
                tls_dir: str = "/run/secrets") -> dict[str, Any]:
    """The TLS part of pgbackrest.conf: ``repo`` (host, port) the repository's server as a node
    reaches it (a node's file); ``nodes`` each node's server as the repository reaches it (the
    repository's file). Either way the file also makes its reader a server of its own."""
    files = {part: f"{tls_dir}/{name}" for part, name in TLS_FILES.items()}
    return {"tls": {"repo": repo, "nodes": nodes, "files": files, "client_cn": CLIENT_CN, "repo_port": REPO_PORT,
                    "node_port": NODE_SERVER_PORT,
                    "archive_get_io_timeout_s": ARCHIVE_GET_IO_TIMEOUT_S, "connect_timeout_s": NODE_CONNECT_TIMEOUT_S}}
