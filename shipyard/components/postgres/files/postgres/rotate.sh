#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): a rotated password set in the
# running cluster (make secrets-rotate; shipyard/apply/rotation.py runs it in every node).
#   bash rotate.sh superuser|ROLE SECRET   (SECRET: the file in /run/secrets with the new value)
# Only the primary changes the role; replicas receive the change through the WAL and skip.
# It authenticates as the superuser over the local socket with the superuser's password, or with
# the retiring one while that is the password rotating (or a rerun finds it already changed).
# Values go to psql through its environment and stdin, never on a command line, and the
# statement is kept out of the server log.
set -Eeuo pipefail
role=$1
new=$(cat "/run/secrets/$2")
[ "$role" = superuser ] && role=$PG_SUPERUSER
psql_as() {  # psql_as PASSWORD: SQL on stdin, as the superuser over the local socket
    PGPASSWORD=$1 psql -h /var/run/postgresql -U "$PG_SUPERUSER" -d postgres -XAtq -v ON_ERROR_STOP=1
}
auth=
for candidate in "$(cat /run/secrets/postgres_password)" "$(cat /run/secrets/postgres_password.retiring 2>/dev/null)"; do
    if [ -n "$candidate" ] && echo "SELECT 1" | psql_as "$candidate" >/dev/null 2>&1; then
        auth=$candidate
        break
    fi
done
if [ -z "$auth" ]; then
    echo "node $PG_NODE: neither the new nor the retiring superuser password is accepted (is the server up?)" >&2
    exit 1
fi
if [ "$(echo "SELECT pg_is_in_recovery()" | psql_as "$auth")" = t ]; then
    echo "node $PG_NODE: a replica; the primary changes role $role"
    exit 0
fi
printf "SET log_min_duration_statement = -1;\nSET log_statement = 'none';\nALTER ROLE \"%s\" PASSWORD '%s';\n" \
    "$role" "$new" | psql_as "$auth" >/dev/null
echo "node $PG_NODE (primary): new password of role $role set"
