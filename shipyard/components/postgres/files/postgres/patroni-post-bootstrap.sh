#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): Patroni's post_bootstrap, run once,
# on the node that initialised the cluster, before it serves as the leader:
#   patroni-post-bootstrap.sh CONNSTRING   (Patroni's superuser connection, its password in
#   the PGPASSFILE Patroni sets)
# It makes the database (what an image entrypoint's POSTGRES_DB would): $PG_DATABASE,
# owned by the superuser. Roles are Patroni's (replicator, rewinder) and the setup job's.
set -Eeuo pipefail
psql "${1:?usage: $0 CONNSTRING}" -XAtq -v ON_ERROR_STOP=1 -v db="${PG_DATABASE:?PG_DATABASE is not set}" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
echo "patroni-post-bootstrap: database $PG_DATABASE ready"
# pgBackRest's stanza, once the cluster exists (archive_command fails and PostgreSQL retries the
# segment until it does). Not fatal: a failed post_bootstrap makes Patroni wipe the new cluster,
# and every backup makes the stanza if it is missing.
python3 "$(dirname "${BASH_SOURCE[0]}")/pgbackrest-node.py" stanza \
    || echo "patroni-post-bootstrap: the pgBackRest stanza could not be made yet; the first backup makes it" >&2
