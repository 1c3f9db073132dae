#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): pgBackRest's repository as a server,
# once the PostgreSQL nodes span hosts (docs/data-tier.md). Started as root: hands the volume to
# postgres (the server writes every file as it, like archive-push on a shared volume did), then
# runs the backup schedule beside `pgbackrest server` (as postgres, PID 1 the server: a stop ends
# both). The nodes reach the server over mutual TLS; the backups it starts reach each node's own
# server and find the primary there, so a failover changes nothing here.
set -Eeuo pipefail
conf=$(dirname "${BASH_SOURCE[0]}")
repo=/var/lib/pgbackrest
find "$repo" -maxdepth 0 \! -user postgres -exec chown postgres: '{}' +
export HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres
setpriv --reuid=postgres --regid=postgres --init-groups python3 "$conf/pgbackrest-node.py" schedule &
exec setpriv --reuid=postgres --regid=postgres --init-groups pgbackrest "--config=${PGBACKREST_CONFIG:?}" server
