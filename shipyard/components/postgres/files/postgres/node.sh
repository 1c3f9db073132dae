#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): start of one PostgreSQL node.
# Environment (set by the render): PG_NODES, PG_CLONE_ATTEMPTS, SHIPYARD_ENV.
#   bash node.sh NODE postgres -c config_file=...   (then runs that server command)
# Every node, `postgres` and the replicas, starts through here; whether it is the primary or a
# replica is decided by its data, not its service name, so a promotion survives re-deploys:
# - data present: start it as it is. standby.signal → a replica of whichever other node
#   accepts writes (primary_conninfo lists them all with target_session_attrs=read-write).
#   Data without standby.signal while another node already accepts writes: refuse to start
#   (two primaries would split the data); the fix is `make pg-rebuild`.
# - empty, and another node is the primary: clone from it with pg_basebackup -R on a fresh
#   physical slot (an idle slot left by an earlier life of this node is dropped first).
# - empty, node `postgres`, no other node running and not marked for rebuild: the image's
#   entrypoint initialises a new primary (initdb, then /docker-entrypoint-initdb.d).
# A re-run of the deploy never clones a node that has data.
set -Eeuo pipefail
. "$(dirname "$BASH_SOURCE")/cluster.sh"
me=$1
shift
slot=$(slot_of "$me")
# Left in the volume (outside PGDATA) by `make pg-rebuild`/`pg-promote`: this node was part of
# the cluster and must clone, never initdb, even if no other node answers yet.
rebuild_marker=/var/lib/postgresql/data/.shipyard-rebuild
server=("$@" -c "cluster_name=$me" -c "primary_slot_name=$slot")
if [ -n "$(other_nodes "$me")" ]; then
    server+=(-c "primary_conninfo=$(standby_conninfo "$me")")
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    if [ ! -s "$PGDATA/PG_VERSION" ] && [ "$me" = postgres ] && [ ! -e "$rebuild_marker" ] \
            && ! any_other_node_runs "$me"; then
        echo "node $me: no cluster yet; initialising a new primary"
        exec docker-entrypoint.sh "${server[@]}"
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$BASH_SOURCE" "$me" "$@"
fi

export PGPASSFILE=$PG_REPLICATION_PASSFILE
if [ -s "$PGDATA/PG_VERSION" ] && [ -e "$PGDATA/backup_label" ] && [ ! -e "$PGDATA/standby.signal" ]; then
    # pg_basebackup -R writes standby.signal once the data is all there, and a server renames
    # backup_label at its first start: this is a clone that was killed halfway.
    echo "node $me: $PGDATA holds a clone that was interrupted (backup_label, no standby.signal); cloning again"
    rm -rf "${PGDATA:?}"/*
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    for attempt in $(seq 1 "$PG_CLONE_ATTEMPTS"); do
        # A slot left by an earlier life of this node would hold WAL forever: drop it if idle.
        if primary=$(find_primary "$me") \
           && pg_ask "$primary" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                                 WHERE slot_name = '$slot' AND NOT active" >/dev/null \
           && pg_basebackup -h "$primary" -p "$PG_PORT" -U replicator -w -D "$PGDATA" \
                  -R -X stream -C -S "$slot" --checkpoint=fast; then
            echo "node $me: cloned from primary $primary:$PG_PORT on slot $slot"
            rm -f "$rebuild_marker"
            break
        fi
        rm -rf "${PGDATA:?}"/*
        if [ "$attempt" = "$PG_CLONE_ATTEMPTS" ]; then
            echo "node $me cannot clone: no primary among $(other_nodes "$me" | sed "s/\$/:$PG_PORT/" | paste -sd,)" \
                 "answered after $PG_CLONE_ATTEMPTS attempts; check that the primary is up and that the" \
                 "replication role and its pg_hba line exist" >&2
            exit 1
        fi
        echo "node $me: no primary answers yet (attempt $attempt); retrying in 2s" >&2
        sleep 2
    done
elif [ ! -e "$PGDATA/standby.signal" ] && other=$(find_primary "$me"); then
    echo "node $me: refusing to start as a second primary: $other already accepts writes; this node's" \
         "data is from before a promotion. Rebuild it as a replica: make pg-rebuild ENV=$SHIPYARD_ENV NODE=$me" >&2
    exit 1
fi
if [ -e "$PGDATA/standby.signal" ]; then
    # A standby refuses to start when one of these is lower than the primary's value it last
    # replayed (kept in pg_control). A deploy that lowers one restarts every node at once, before
    # this node has replayed the primary's new value: start with the recorded one, so it can
    # replay the change; the setting applies at its next restart.
    controldata=$(pg_controldata "$PGDATA")
    for pair in max_connections:max_connections max_worker_processes:max_worker_processes \
                max_wal_senders:max_wal_senders max_prepared_transactions:max_prepared_xacts \
                max_locks_per_transaction:max_locks_per_xact; do
        param=${pair%%:*}
        recorded=$(sed -n "s/^${pair##*:} setting: *//p" <<<"$controldata")
        own=$("${server[@]}" -C "$param")
        if [ -n "$recorded" ] && [ "$recorded" -gt "$own" ]; then
            echo "node $me: starting with $param=$recorded, the primary's value as last replayed, not $own;" \
                 "$own applies at this replica's next restart"
            server+=(-c "$param=$recorded")
        fi
    done
fi
exec "${server[@]}"
