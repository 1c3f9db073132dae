#!/usr/bin/env bash
# Rendered by Shipyard for environment local: start of a streaming replica.
#   bash replica-entrypoint.sh SLOT PRIMARY_HOST PRIMARY_PORT postgres -c config_file=...   (then runs the server command given)
# An empty data directory is cloned from the primary with pg_basebackup -R (standby.signal and
# primary_conninfo with a passfile, so no password lands in PGDATA) on a fresh physical slot.
# A data directory that exists is never cloned again: a re-run of the deploy keeps the replica.
set -Eeuo pipefail
slot=$1 primary_host=$2 primary_port=$3
shift 3

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$BASH_SOURCE" "$slot" "$primary_host" "$primary_port" "$@"
fi

export PGPASSFILE=/run/secrets/replication_pgpass
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    primary="host=$primary_host port=$primary_port user=replicator dbname=postgres connect_timeout=5"
    for attempt in $(seq 1 15); do
        # A slot left by an earlier life of this replica would hold WAL forever: drop it if idle.
        if psql "$primary" -v ON_ERROR_STOP=1 -qtAc \
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" >/dev/null \
           && pg_basebackup -h "$primary_host" -p "$primary_port" -U replicator -w -D "$PGDATA" \
                  -R -X stream -C -S "$slot" --checkpoint=fast; then
            echo "replica cloned from primary $primary_host:$primary_port on slot $slot"
            break
        fi
        rm -rf "${PGDATA:?}"/*
        if [ "$attempt" = 15 ]; then
            echo "replica ($slot) cannot clone from primary $primary_host:$primary_port after 15 attempts;" \
                 "check that the primary is up and that the replication role and pg_hba line exist" >&2
            exit 1
        fi
        echo "replica ($slot): primary $primary_host:$primary_port not ready (attempt $attempt); retrying in 2s" >&2
        sleep 2
    done
fi
exec "$@"
