#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): backups of the primary, into the
# pgbackups volume. Environment (set by the render): PG_NODES, PG_BACKUP_INTERVAL_S,
# PG_BACKUP_KEEP, PG_BACKUP_RETRY_S, PG_WAL_ARCHIVE_SLOT.
#   bash backup.sh schedule   the container's command: the WAL archive, and a base backup now and every $PG_BACKUP_INTERVAL_S s
#   bash backup.sh now        one base backup now (`make pg-backup`)
#   bash backup.sh list       the complete base backups, oldest first (`make pg-restore`)
#   bash backup.sh check      health: the newest base backup is younger than two intervals and
#                             the WAL archive streams from the primary
# Base backups: /backups/base-<UTC time>/ with base.tar.gz and pg_wal.tar.gz (the WAL that
# makes it consistent), written as *.partial and renamed when complete; the newest
# $PG_BACKUP_KEEP are kept. A failed one is retried every $PG_BACKUP_RETRY_S s. A complete one
# records its time in shipyard_monitor.base_backup on the primary (the exporters' backup age).
# WAL archive: /backups/wal/, every WAL record as the primary writes it (pg_receivewal
# --synchronous on its own slot, $PG_WAL_ARCHIVE_SLOT), so a restore replays up to the last commit, or to a
# chosen time. WAL older than the oldest kept base backup is removed with it.
# Everything streams from whichever node is the primary at the time (after `make pg-promote`,
# the new one), as the replication role (passfile secret).
set -Eeuo pipefail
. "$(dirname "$BASH_SOURCE")/cluster.sh"
mode=$1
if [ "$(id -u)" = 0 ]; then
    mkdir -p /backups/wal && chown postgres:postgres /backups /backups/wal && chmod 700 /backups /backups/wal
    exec setpriv --reuid=postgres --regid=postgres --init-groups bash "$BASH_SOURCE" "$@"
fi
export PGPASSFILE=$PG_REPLICATION_PASSFILE
wal_slot=${PG_WAL_ARCHIVE_SLOT:?}

newest() { ls -1d /backups/base-* 2>/dev/null | grep -v '\.partial$' | sort | tail -n 1; }
kept() { ls -1d /backups/base-* 2>/dev/null | grep -v '\.partial$' | sort; }

# Every step checks its own status: called as `if backup_now`, bash runs it without `set -e`.
backup_now() {
    local name primary oldest first_wal
    primary=$(find_primary) || { echo "no primary among $PG_NODES answers" >&2; return 1; }
    name=/backups/base-$(date -u +%Y%m%dT%H%M%S.%3NZ)
    rm -rf "$name.partial"
    if ! pg_basebackup -h "$primary" -p "$PG_PORT" -U replicator -w -D "$name.partial" -Ft -z -X stream \
            --checkpoint=fast; then
        rm -rf "$name.partial"
        echo "base backup from $primary failed; nothing kept of it" >&2
        return 1
    fi
    mv "$name.partial" "$name" || return 1
    # Where the exporters read it (shipyard_monitor.base_backup, made by the postgres-setup job):
    # a backup that cannot say so still counts, and the next one records it.
    pg_ask "$primary" "INSERT INTO shipyard_monitor.base_backup VALUES (1, now())
                       ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at" >/dev/null \
        || echo "backup $name complete, but its time could not be recorded on $primary (the backup age metric)" >&2
    kept | head -n -"$PG_BACKUP_KEEP" | xargs -r rm -rf
    # The archive keeps what the oldest kept base backup needs to be replayed forward.
    oldest=$(kept | head -n 1)
    first_wal=$(tar -xzOf "$oldest/base.tar.gz" backup_label | sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]*\))$/\1/p')
    [ -z "$first_wal" ] || pg_archivecleanup /backups/wal "$first_wal"
    echo "backup $name of $primary complete ($(du -sh "$name" | cut -f1)); kept: $(kept | wc -l)"
}

# Streams the primary's WAL into /backups/wal; when the primary goes away (a promotion),
# finds the new one and carries on there (pg_receivewal follows the timeline switch).
archive_wal() {
    local primary
    while true; do
        if primary=$(find_primary); then
            pg_receivewal -h "$primary" -p "$PG_PORT" -U replicator -w -S "$wal_slot" --create-slot --if-not-exists \
                && pg_receivewal -h "$primary" -p "$PG_PORT" -U replicator -w -S "$wal_slot" -D /backups/wal \
                       --synchronous --no-loop \
                || echo "WAL archive: streaming from $primary stopped; looking for the primary again" >&2
        fi
        sleep 1
    done
}

case "$mode" in
    schedule)
        archive_wal &
        while true; do
            if backup_now; then
                sleep "$PG_BACKUP_INTERVAL_S"
            else
                echo "backup failed; next attempt in $PG_BACKUP_RETRY_S s" >&2
                sleep "$PG_BACKUP_RETRY_S"
            fi
        done ;;
    now) backup_now ;;
    list) kept ;;
    check)
        last=$(newest)
        [ -n "$last" ] || { echo "no complete backup yet"; exit 1; }
        age=$(( $(date +%s) - $(stat -c %Y "$last") ))
        [ "$age" -lt $(( 2 * PG_BACKUP_INTERVAL_S )) ] || { echo "newest backup is ${age}s old"; exit 1; }
        primary=$(find_primary) || { echo "no primary answers"; exit 1; }
        [ "$(pg_ask "$primary" "SELECT active FROM pg_replication_slots WHERE slot_name = '$wal_slot'")" = t ] \
            || { echo "the WAL archive does not stream from $primary (slot $wal_slot inactive)"; exit 1; } ;;
    *) echo "usage: backup.sh schedule | now | list | check" >&2; exit 2 ;;
esac
