# Shipped by Shipyard (shipyard/components/postgres/files/). Run once, by the image's entrypoint, when the
# primary's data directory is first initialised: the role replicas clone and stream as.
# psql reads the password from the secret file itself (\set with backticks): it is never on a
# command line or in the environment.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\set pw `cat /run/secrets/replication_password`
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SQL
# Health checks of replicas log in as this role and need pg_stat_wal_receiver's details.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -c 'GRANT pg_read_all_stats TO replicator'
