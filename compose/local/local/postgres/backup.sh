#!/usr/bin/env bash
# Rendered by Shipyard for environment local: scheduled base backups of the primary.
#   bash backup.sh schedule HOST PORT   the container's command: a backup now, then every 3600 s
#   bash backup.sh now [HOST PORT]      one backup now (`make pg-backup`)
#   bash backup.sh check                health: the newest complete backup is younger than two intervals
# Each backup is /backups/base-<UTC time>/ with base.tar.gz and pg_wal.tar.gz (the WAL that
# makes it consistent), written as *.partial and renamed when complete; the newest
# 3 are kept. It streams as the replication role (passfile secret).
set -Eeuo pipefail
mode=$1
if [ "$(id -u)" = 0 ]; then
    mkdir -p /backups && chown postgres:postgres /backups && chmod 700 /backups
    exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$BASH_SOURCE" "$@"
fi
export PGPASSFILE=/run/secrets/replication_pgpass
host=${2:-$(cat /backups/.primary 2>/dev/null | cut -d' ' -f1)}
port=${3:-$(cat /backups/.primary 2>/dev/null | cut -d' ' -f2)}

newest() { ls -1d /backups/base-* 2>/dev/null | grep -v '\.partial$' | sort | tail -n 1; }

backup_now() {
    local name; name=/backups/base-$(date -u +%Y%m%dT%H%M%S.%3NZ)
    rm -rf "$name.partial"
    pg_basebackup -h "$host" -p "$port" -U replicator -w -D "$name.partial" -Ft -z -X stream --checkpoint=fast
    mv "$name.partial" "$name"
    ls -1d /backups/base-* | grep -v '\.partial$' | sort | head -n -3 | xargs -r rm -rf
    echo "backup $name complete ($(du -sh "$name" | cut -f1)); kept: $(ls -1d /backups/base-* | grep -vc '\.partial$')"
}

case "$mode" in
    schedule)
        echo "$host $port" >/backups/.primary
        while true; do
            backup_now || echo "backup failed; next attempt in 3600 s" >&2
            sleep 3600
        done ;;
    now) backup_now ;;
    check)
        last=$(newest)
        [ -n "$last" ] || { echo "no complete backup yet"; exit 1; }
        age=$(( $(date +%s) - $(stat -c %Y "$last") ))
        [ "$age" -lt $(( 2 * 3600 )) ] || { echo "newest backup is ${age}s old"; exit 1; } ;;
    *) echo "usage: backup.sh schedule HOST PORT | now | check" >&2; exit 2 ;;
esac
