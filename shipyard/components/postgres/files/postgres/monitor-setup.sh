#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): the postgres-setup job. As the
# superuser, on whichever node is the primary now, it makes (idempotently, at every deploy):
# - the exporters' role $PG_EXPORTER_ROLE: LOGIN, member of pg_monitor and nothing else, its
#   password from the secret file pg_exporter_password (a rotated one is set by the job's rerun);
# - shipyard_monitor.base_backup: one row, the time the last backup completed, written by the
#   leader's pgbackrest-node.py (as the superuser) and read by every node's exporter (it
#   replicates), which is how "last base backup too old" becomes a metric.
# Environment (set by the render): PG_NODES (each node as this host reaches it: NAME, or ADDRESS:PORT
# on another host), PG_SUPERUSER, PG_EXPORTER_ROLE.
# Values reach psql through a file (\set with backticks) and its environment, never a command line.
set -Eeuo pipefail
read -r -a nodes <<<"${PG_NODES:?}"
export PGPASSWORD
PGPASSWORD=$(cat /run/secrets/postgres_password)
as_superuser() {  # as_superuser NODE[:PORT] [psql args]: SQL on stdin
    local node=${1%:*} port=5432
    [ "$node" = "$1" ] || port=${1##*:}
    shift
    psql "host=$node port=$port user=$PG_SUPERUSER dbname=postgres connect_timeout=2" -XAtq -v ON_ERROR_STOP=1 "$@"
}
# The primary, once Patroni finished bootstrapping it: Patroni makes the replication role after
# its post_bootstrap script, while PostgreSQL already takes connections (and the node may
# already pass its health check), so a primary without the role is not ready for the grants below.
ready="SELECT NOT pg_is_in_recovery() AND EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator')"
primary=
for attempt in $(seq 1 60); do
    for node in "${nodes[@]}"; do
        if [ "$(echo "$ready" | as_superuser "$node" 2>/dev/null)" = t ]; then primary=$node; break 2; fi
    done
    echo "postgres-setup: no bootstrapped primary among ${nodes[*]} answers yet (attempt $attempt); retrying in 2s" >&2
    sleep 2
done
[ -n "$primary" ] || { echo "postgres-setup: no primary among ${nodes[*]} answered in 120 s; check them (make status)" >&2; exit 1; }
as_superuser "$primary" -v role="$PG_EXPORTER_ROLE" <<'SQL' >/dev/null
SET log_statement = 'none';
SET log_min_duration_statement = -1;
\set pw `cat /run/secrets/pg_exporter_password`
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD :'pw';
GRANT pg_monitor TO :"role";
-- The replication role's queries (make verify, the drills) read pg_stat_wal_receiver's details;
-- Patroni makes the role without this.
GRANT pg_read_all_stats TO replicator;
CREATE SCHEMA IF NOT EXISTS shipyard_monitor;
CREATE TABLE IF NOT EXISTS shipyard_monitor.base_backup (
    id int PRIMARY KEY CHECK (id = 1),
    finished_at timestamptz NOT NULL
);
REVOKE ALL ON SCHEMA shipyard_monitor FROM PUBLIC;
GRANT USAGE ON SCHEMA shipyard_monitor TO :"role", replicator;
GRANT SELECT ON shipyard_monitor.base_backup TO :"role";
-- Written by the superuser only (pgbackrest-node.py); the replication role wrote it before Patroni.
REVOKE INSERT, UPDATE ON shipyard_monitor.base_backup FROM replicator;
SQL
echo "postgres-setup: role $PG_EXPORTER_ROLE (pg_monitor) and shipyard_monitor.base_backup ready on $primary"
