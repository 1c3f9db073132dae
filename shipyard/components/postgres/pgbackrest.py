"""Backups under Patroni: pgBackRest (Debian bookworm's 2.45).

Pure: what ``pgbackrest.conf`` holds, the stanza's name and the archive and restore commands
Patroni puts in PostgreSQL's configuration. docs/data-tier.md, "Backups with pgBackRest".

One repository (repo1), a directory on the volume ``pgbackrest`` that every PostgreSQL node of
the host mounts at the same path: whichever node leads archives its WAL into it
(``archive_command``) and takes the backups (``files/postgres/pgbackrest-node.py``), so a
failover changes nothing for the repository — one stanza, one archive, the timelines side by
side. Several hosts would need a repository every node reaches: a repo host (pgBackRest's TLS
server) or an object store (repo1-type=s3/gcs/azure), not a local volume.
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
                lock_path: str | None = None) -> dict[str, Any]:
    """The variables of templates/postgres/pgbackrest.conf.j2. ``settings``: the ``postgres``
    section. Paths and the port are arguments so tests/patroni renders it for nodes on loopback."""
    return {"env": env, "pgbackrest": {
        "stanza": stanza(env), "repo_path": repo_path, "data_dir": data_dir, "socket_dir": socket_dir, "port": port,
        "superuser": settings.user, "retention_full": settings.backup_keep, "process_max": settings.backup_processes,
        "compress_type": COMPRESS_TYPE, "archive_timeout_s": ARCHIVE_TIMEOUT_S, "lock_path": lock_path}}
