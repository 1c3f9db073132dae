#!/bin/sh
# Rendered by Shipyard for environment local: container health of a Sentinel: it knows a
# master for tasks.
set -eu
redis-cli -p 26379 sentinel get-master-addr-by-name tasks | grep -q .
