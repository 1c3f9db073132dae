#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): start of a Redis node (master or replica).
# Environment (set by the render): REDIS_SENTINELS and REDIS_NODES (host:port, space-separated),
# REDIS_MASTER_AS_DEPLOYED (host:port), REDIS_MASTER_NAME, REDIS_SENTINEL_WAIT_S.
#   sh node.sh ME_HOST ME_PORT redis-server ...   (then runs that, as the image's entrypoint does)
# After a failover the Sentinels, not the deploy, know which node is the master: a node asks
# them first and starts as a replica of the master a majority of them name (or as the master,
# if that is itself), so a restart or a re-deploy never brings back an old master next to the
# new one. A majority, not the first answer: a Sentinel seeded afresh (a lost volume) names the
# master as deployed until its peers tell it better.
# When no Sentinel answers (all of them down), it asks the other nodes for
# one that runs as a master; when none does either (the first deploy), the layout as deployed:
# $REDIS_MASTER_AS_DEPLOYED is the master.
set -eu
majority=$(( $(echo $REDIS_SENTINELS | wc -w) / 2 + 1 ))
me="$1:$2"
shift 2
master=""
# The Sentinels start next to this node in a re-deploy (they only wait for `redis` to start):
# give them $REDIS_SENTINEL_WAIT_S s to answer before falling back.
round=0
# The Sentinels answer only clients that know their password (their own secret file).
REDISCLI_AUTH=$(cat /run/secrets/sentinel_password)
export REDISCLI_AUTH
while [ -z "$master" ] && [ "$round" -lt "$REDIS_SENTINEL_WAIT_S" ]; do
    answers=""
    for sentinel in $REDIS_SENTINELS; do
        answer=$(timeout 2 redis-cli -h "${sentinel%:*}" -p "${sentinel##*:}" --raw \
                     sentinel get-master-addr-by-name "$REDIS_MASTER_NAME" 2>/dev/null | paste -sd: -) || answer=""
        case "$answer" in
            *:[0-9]*) answers="$answers$answer
" ;;
        esac
    done
    agreed=$(printf '%s' "$answers" | sort | uniq -c | awk -v m="$majority" '$1 >= m { print $1, $2; exit }')
    if [ -n "$agreed" ]; then
        master=${agreed#* }
        echo "node $me: ${agreed%% *} of $(echo $REDIS_SENTINELS | wc -w) Sentinels name $master as the master"
    else
        round=$((round + 1))
        sleep 1
    fi
done
unset REDISCLI_AUTH
if [ -z "$master" ]; then
    REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf)
    export REDISCLI_AUTH
    for node in $REDIS_NODES; do
        [ "$node" != "$me" ] || continue
        if timeout 2 redis-cli -h "${node%:*}" -p "${node##*:}" info replication 2>/dev/null | grep -q '^role:master'; then
            master=$node; echo "node $me: no Sentinel answers; $node runs as the master"; break
        fi
    done
    unset REDISCLI_AUTH
fi
if [ -z "$master" ]; then
    master=$REDIS_MASTER_AS_DEPLOYED
    echo "node $me: no Sentinel answers and no other node runs as a master; $master is the master as deployed"
fi
if [ "$master" = "$me" ]; then
    exec docker-entrypoint.sh "$@"
fi
exec docker-entrypoint.sh "$@" --replicaof "${master%:*}" "${master##*:}"
