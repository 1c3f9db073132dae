#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): container health of a PostgreSQL node.
#   bash health.sh [NODE]     (default: $PG_NODE, set by the render)
# The primary (not in recovery, over TCP) is healthy when it answers; a replica when its WAL
# receiver is streaming and replay lags less than $PG_REPLICA_MAX_LAG_BYTES bytes. The same check serves every node,
# since `make pg-promote` changes which one is primary. Logs in as the replication role.
set -euo pipefail
# Under Patroni (postgres.ha: patroni), Patroni's REST API says.
[ "${PG_HA:-scripts}" != patroni ] || exec python3 "$(dirname "$BASH_SOURCE")/patroni-health.py"
. "$(dirname "$BASH_SOURCE")/cluster.sh"
me=${1:-${PG_NODE:?PG_NODE is not set}}
q() { pg_ask 127.0.0.1 "$1"; }
recovery=$(q 'SELECT pg_is_in_recovery()') || { echo "node $me does not accept connections on port $PG_PORT yet"; exit 1; }
[ "$recovery" = t ] || exit 0
primaries=$(other_nodes "$me" | sed "s/\$/:$PG_PORT/" | paste -sd,)
state=$(q "SELECT coalesce((SELECT status || coalesce(' from ' || sender_host, '') FROM pg_stat_wal_receiver), 'no WAL receiver')")
case "$state" in
    "streaming from "*) ;;
    *) echo "replica $me cannot stream from the primary (one of $primaries): $state"; exit 1 ;;
esac
lag=$(q "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint")
[ "$lag" -lt "$PG_REPLICA_MAX_LAG_BYTES" ] || { echo "replica $me: replay lags ${lag} bytes behind what it received (${state#streaming })"; exit 1; }
