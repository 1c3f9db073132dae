#!/usr/bin/env bash
# Rendered by Shipyard for environment production: container health of a PostgreSQL node.
#   bash health.sh primary   → accepts writes (not in recovery), over TCP
#   bash health.sh replica   → in recovery, WAL receiver streaming, replay lag < 16 MB
set -euo pipefail
q() { psql -h 127.0.0.1 -p 5432 -d postgres -qtAX -c "$1"; }
if [ "$1" = primary ]; then
    export PGUSER=tasks PGPASSWORD="$(cat /run/secrets/postgres_password)"
    [ "$(q 'SELECT pg_is_in_recovery()')" = f ] || { echo "not a primary: in recovery"; exit 1; }
else
    export PGUSER=replicator PGPASSFILE=/run/secrets/replication_pgpass
    state=$(q "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'no wal receiver')")
    [ "$state" = streaming ] || { echo "replica not streaming: $state"; exit 1; }
    lag=$(q "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint")
    [ "$lag" -lt 16777216 ] || { echo "replay lag $lag bytes"; exit 1; }
fi
