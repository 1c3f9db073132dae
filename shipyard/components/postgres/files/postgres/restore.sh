#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): start a fresh PostgreSQL from a base backup.
#   bash restore.sh /backups/base-<time> [UNTIL]    (`make pg-restore`; run in a new container)
# Unpacks base.tar.gz and its pg_wal.tar.gz into an empty data directory, then starts the
# server in archive recovery: it replays the backup's own WAL, then the WAL archive
# (/backups/wal, the newest partial segment included), up to its end or to the time UNTIL
# ('2026-11-24 08:00:00+00'), and then opens for writes as a new timeline.
#   bash restore.sh count USER DATABASE    "in recovery|rows of tasks" once it answers (the drill
#                                          polls it; the password stays inside this container)
set -Eeuo pipefail
if [ "${1:-}" = count ]; then
    PGPASSWORD=$(cat /run/secrets/postgres_password) exec psql -h 127.0.0.1 -U "$2" -d "$3" -qtAX \
        -c 'SELECT pg_is_in_recovery(), count(*) FROM tasks'
fi
backup=$1 until=${2:-}
if [ "$(id -u)" = 0 ]; then
    [ -f "$backup/base.tar.gz" ] || { echo "no base.tar.gz in $backup" >&2; exit 1; }
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
        mkdir -p "$PGDATA/pg_wal"
        tar -xzf "$backup/base.tar.gz" -C "$PGDATA"
        tar -xzf "$backup/pg_wal.tar.gz" -C "$PGDATA/pg_wal"
        touch "$PGDATA/recovery.signal"
        echo "unpacked $backup into $PGDATA"
    fi
    chown -R postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    # A segment still being written is archived as <name>.partial: it holds the newest commits.
    restore_command='f=/backups/wal/%f; if [ -f "$f" ]; then cp "$f" "%p"; elif [ -f "$f.partial" ]; then cp "$f.partial" "%p"; else exit 1; fi'
    target=()
    [ -z "$until" ] || target=(-c "recovery_target_time=$until")
    # hot_standby=off: a read-only standby would have to match the backed-up primary's
    # max_connections & co., and this server runs with the defaults of the backup's own
    # postgresql.conf; it answers once recovery is over, which is when it is counted anyway.
    exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -c listen_addresses='*' -c hot_standby=off \
        -c hba_file=/etc/postgresql/shipyard/pg_hba.conf -c "restore_command=$restore_command" \
        -c recovery_target_timeline=latest -c recovery_target_action=promote "${target[@]}"
fi
echo "run as root" >&2
exit 1
