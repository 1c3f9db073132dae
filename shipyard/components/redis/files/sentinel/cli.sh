#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): redis-cli to this Sentinel, with its
# password from the secret file (in the environment of redis-cli only, never on a command line).
#   sh cli.sh sentinel get-master-addr-by-name tasks
REDISCLI_AUTH=$(cat /run/secrets/sentinel_password)
export REDISCLI_AUTH
exec redis-cli --no-auth-warning -p 26379 "$@"
