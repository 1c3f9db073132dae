#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): a rotated Redis password told to the
# running Sentinel, which monitors the nodes with it (make secrets-rotate). Its /data config
# is rewritten by Sentinel itself; entrypoint.sh writes the same from the file at the next start.
# The value goes to redis-cli on stdin, never on a command line.
set -eu
out=$(printf 'SENTINEL SET %s auth-pass %s\n' "$REDIS_MASTER_NAME" "$(cat /run/secrets/redis_password)" \
      | REDISCLI_AUTH=$(cat /run/secrets/sentinel_password) redis-cli --no-auth-warning -p 26379)
[ "$out" = OK ] || { echo "sentinel: SENTINEL SET auth-pass failed: $out" >&2; exit 1; }
echo "sentinel: monitors $REDIS_MASTER_NAME with the new password"
