#!/usr/bin/env bash
# Rendered by Shipyard for environment local: scheduled base backups of the primary.
#   bash backup.sh schedule   the container's command: a backup now, then every 3600 s
#   bash backup.sh now        one backup now (`make pg-backup`)
#   bash backup.sh check      health: the newest complete backup is younger than two intervals
# Each backup is /backups/base-<UTC time>/ with base.tar.gz and pg_wal.tar.gz (the WAL that
# makes it consistent), written as *.partial and renamed when complete; the newest
# 3 are kept. It streams from whichever node is the primary at the time, as the
# replication role (passfile secret). A failed backup is retried every 10 s.
set -Eeuo pipefail
. "$(dirname "$BASH_SOURCE")/cluster.sh"
mode=$1
if [ "$(id -u)" = 0 ]; then
    mkdir -p /backups && chown postgres:postgres /backups && chmod 700 /backups
    exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$BASH_SOURCE" "$@"
fi
export PGPASSFILE=$PG_REPLICATION_PASSFILE

newest() { ls -1d /backups/base-* 2>/dev/null | grep -v '\.partial$' | sort | tail -n 1; }

backup_now() {
    local name primary
    primary=$(find_primary) || { echo "no primary among ${PG_NODES[*]} answers" >&2; return 1; }
    name=/backups/base-$(date -u +%Y%m%dT%H%M%S.%3NZ)
    rm -rf "$name.partial"
    pg_basebackup -h "$primary" -p "$PG_PORT" -U replicator -w -D "$name.partial" -Ft -z -X stream --checkpoint=fast
    mv "$name.partial" "$name"
    ls -1d /backups/base-* | grep -v '\.partial$' | sort | head -n -3 | xargs -r rm -rf
    echo "backup $name of $primary complete ($(du -sh "$name" | cut -f1)); kept: $(ls -1d /backups/base-* | grep -vc '\.partial$')"
}

case "$mode" in
    schedule)
        while true; do
            if backup_now; then
                sleep 3600
            else
                echo "backup failed; next attempt in 10 s" >&2
                sleep 10
            fi
        done ;;
    now) backup_now ;;
    check)
        last=$(newest)
        [ -n "$last" ] || { echo "no complete backup yet"; exit 1; }
        age=$(( $(date +%s) - $(stat -c %Y "$last") ))
        [ "$age" -lt $(( 2 * 3600 )) ] || { echo "newest backup is ${age}s old"; exit 1; } ;;
    *) echo "usage: backup.sh schedule | now | check" >&2; exit 2 ;;
esac
