#!/usr/bin/env bash
# Rendered by Shipyard for environment production: start a fresh PostgreSQL from a base backup.
#   bash restore.sh /backups/base-<time>    (`make pg-restore`; run in a new container)
# Unpacks base.tar.gz and its pg_wal.tar.gz into an empty data directory, then starts the
# server on it: recovery replays the WAL that came with the backup, to a consistent state.
set -Eeuo pipefail
backup=$1
if [ "$(id -u)" = 0 ]; then
    [ -f "$backup/base.tar.gz" ] || { echo "no base.tar.gz in $backup" >&2; exit 1; }
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        mkdir -p "$PGDATA/pg_wal"
        tar -xzf "$backup/base.tar.gz" -C "$PGDATA"
        tar -xzf "$backup/pg_wal.tar.gz" -C "$PGDATA/pg_wal"
        echo "unpacked $backup into $PGDATA"
    fi
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -c listen_addresses='*' \
        -c hba_file=/etc/postgresql/shipyard/pg_hba.conf
fi
echo "run as root" >&2
exit 1
