#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): operations on a STOPPED node's
# data directory, run by the drills (`make pg-promote`, `make pg-rebuild`) in a throwaway
# container that has the node's volumes, as the postgres user:
#   bash data.sh identify   the cluster's system identifier ("" when the node has no data)
#   bash data.sh fence      mark the data as a standby (standby.signal) and print the cluster
#                           state and latest checkpoint (pg_controldata)
#   bash data.sh unfence    remove standby.signal (the switchover was undone)
#   bash data.sh fence-if-data   fence when there is data at all (a dead node)
#   bash data.sh wipe       delete the data and leave the rebuild marker: node.sh then clones
set -Eeuo pipefail
export LC_ALL=C
rebuild_marker=/var/lib/postgresql/data/.shipyard-rebuild
case "${1:-}" in
    identify) [ ! -s "$PGDATA/PG_VERSION" ] || pg_controldata "$PGDATA" | sed -n 's/^Database system identifier: *//p' ;;
    fence) touch "$PGDATA/standby.signal" && pg_controldata "$PGDATA" ;;
    fence-if-data) [ ! -s "$PGDATA/PG_VERSION" ] || touch "$PGDATA/standby.signal" ;;
    unfence) rm -f "$PGDATA/standby.signal" ;;
    wipe) find "$PGDATA" -mindepth 1 -delete && touch "$rebuild_marker" ;;
    *) echo "usage: data.sh identify | fence | fence-if-data | unfence | wipe" >&2; exit 2 ;;
esac
