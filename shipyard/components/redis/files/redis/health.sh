#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): container health of a Redis node: it answers
# an authenticated PING, and a replica's link to its master is up.
set -eu
REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf)
export REDISCLI_AUTH
[ "$(redis-cli -p 6379 ping)" = PONG ]
info=$(redis-cli -p 6379 info replication | tr -d '\r')
case "$info" in
    *role:slave*) echo "$info" | grep -q '^master_link_status:up' || { echo "replica link to master is down"; exit 1; } ;;
esac
