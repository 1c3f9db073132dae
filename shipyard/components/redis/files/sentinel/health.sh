#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): container health of a Sentinel: it
# knows a master for $REDIS_MASTER_NAME (set by the render).
set -eu
sh "$(dirname "$0")/cli.sh" sentinel get-master-addr-by-name "$REDIS_MASTER_NAME" | grep -q .
