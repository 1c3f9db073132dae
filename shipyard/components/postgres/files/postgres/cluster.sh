# Shipped by Shipyard (shipyard/components/postgres/files/): the PostgreSQL nodes of this
# environment and how to tell which one is the primary now. Sourced (bash) by node.sh, health.sh and backup.sh.
# The primary is not written down anywhere: after `make pg-promote` it is a former replica, so
# every script asks the nodes themselves (pg_is_in_recovery), as the replication role.
# PG_NODES comes from the container's environment (the render: every node, space-separated).
# (an array of its own: bash does not export arrays, and node.sh re-executes itself)
read -r -a PG_NODE_LIST <<<"${PG_NODES:?PG_NODES is not set (the render sets it in compose.yaml)}"
PG_PORT=5432
PG_REPLICATION_PASSFILE=/run/secrets/replication_pgpass

# pg_ask NODE SQL → prints the answer; fails when the node does not answer.
pg_ask() {
    psql "host=$1 port=$PG_PORT user=replicator dbname=postgres connect_timeout=2 passfile=$PG_REPLICATION_PASSFILE" \
        -qtAX -v ON_ERROR_STOP=1 -c "$2" 2>/dev/null
}

# other_nodes NODE → every node but NODE, one per line.
other_nodes() {
    local node
    for node in "${PG_NODE_LIST[@]}"; do [ "$node" = "$1" ] || echo "$node"; done
}

# find_primary [EXCEPT] → prints the node that accepts writes; fails when none does.
find_primary() {
    local node
    for node in $(other_nodes "${1:-}"); do
        if [ "$(pg_ask "$node" 'SELECT pg_is_in_recovery()')" = f ]; then echo "$node"; return 0; fi
    done
    return 1
}

# any_other_node_runs NODE → true when another node accepts connections (so a cluster exists).
any_other_node_runs() {
    local node
    for node in $(other_nodes "$1"); do
        pg_isready -q -h "$node" -p "$PG_PORT" -t 2 && return 0
    done
    return 1
}

# standby_conninfo NODE → NODE's primary_conninfo: every other node; libpq connects to the one
# that accepts writes, so a replica follows a promotion without being reconfigured.
standby_conninfo() {
    local hosts="" ports="" node
    for node in $(other_nodes "$1"); do hosts+="${hosts:+,}$node"; ports+="${ports:+,}$PG_PORT"; done
    echo "host=$hosts port=$ports user=replicator passfile=$PG_REPLICATION_PASSFILE target_session_attrs=read-write connect_timeout=5"
}

# slot_of NODE → the physical replication slot NODE streams on.
slot_of() { echo "${1//-/_}"; }
