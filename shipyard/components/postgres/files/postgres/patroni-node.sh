#!/usr/bin/env bash
# Shipped by Shipyard (shipyard/components/postgres/files/): a PostgreSQL node under Patroni.
# Started as root by the image's entrypoint; hands the data volume to
# postgres, makes Patroni's config directory — the rendered patroni.yml and the node's secret
# fragments (/run/secrets/patroni-*.yml, mode 0400), linked side by side, which Patroni merges —
# and becomes Patroni (PID 1), as postgres. Patroni runs PostgreSQL: initdb on the first node to
# take the leader lock in etcd, a clone (pg_basebackup) on the others, pg_rewind or a re-clone of
# an old leader. The node's own name and addresses are in its environment (PATRONI_NAME...).
# Beside it, the backup loop of pgbackrest-node.py (scheduled pgBackRest backups on the leader).
set -Eeuo pipefail
conf=$(dirname "${BASH_SOURCE[0]}")
volume=$(dirname "${PGDATA:?PGDATA is not set (the render sets it in compose.yaml)}")
# A fresh volume is root-owned: hand it to postgres (what is already its own is left alone).
find "$volume" -maxdepth 1 \! -user postgres -exec chown postgres: '{}' +
config=/var/lib/postgresql/patroni.d
install -d -o postgres -g postgres -m 0700 "$config"
ln -sfn "$conf/patroni.yml" "$config/patroni.yml"
found=0
for fragment in /run/secrets/patroni-*.yml; do
    [ -e "$fragment" ] || continue
    ln -sfn "$fragment" "$config/${fragment##*/}"
    found=$((found + 1))
done
[ "$found" -gt 0 ] || { echo "patroni-node: no /run/secrets/patroni-*.yml: the deploy delivers them (make up ENV=..)" >&2; exit 1; }
# Only the first node (`postgres`) makes the cluster: another with no data yet joins it by a
# clone, however the starts race (compose starts the replicas after it on one host, but across
# hosts they start in one rollout step). Patroni lets no `nofailover` node initialise a cluster:
# the tag holds until this node is a healthy replica, then goes, and Patroni re-reads its
# configuration (SIGHUP) — from then on it is a failover candidate like every node (and its
# container healthy: patroni-health.py counts the tag).
tags="$config/zz-node-role.yml"
rm -f "$tags"
if [ "${PATRONI_NAME:?}" != postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    printf '%s\n' 'tags:' '  nofailover: true' >"$tags"
    chown postgres: "$tags"
    (until python3 "$conf/patroni-health.py" --joining >/dev/null 2>&1; do sleep 2; done
     rm -f "$tags"
     kill -HUP 1) &
fi
export HOME=/var/lib/postgresql USER=postgres LOGNAME=postgres
# pgBackRest's repository (the volume every node mounts): postgres's, like the data.
repo=/var/lib/pgbackrest
[ -d "$repo" ] && find "$repo" -maxdepth 0 \! -user postgres -exec chown postgres: '{}' +
# The scheduled backups: the same loop in every node, acting only while its node leads (it asks
# Patroni), so they follow a failover. Once the repository is a server of its own
# (PG_BACKUP_REPOSITORY=remote: the nodes span hosts) the backups are started from there, and
# the leader's loop only records the newest one's time; this node then serves pgBackRest too,
# for those backups (its TLS server reaches PostgreSQL over the socket, as the superuser).
# Neither outlives the node: Patroni (PID 1) reaps them and the container's end stops them.
setpriv --reuid=postgres --regid=postgres --init-groups python3 "$conf/pgbackrest-node.py" schedule &
if [ "${PG_BACKUP_REPOSITORY:-}" = remote ]; then
    PGPASSFILE="${PG_SUPERUSER_PASSFILE:?}" setpriv --reuid=postgres --regid=postgres --init-groups \
        pgbackrest "--config=${PGBACKREST_CONFIG:?}" server &
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups patroni "$config"
