#!/bin/sh
# Shipped by Shipyard (shipyard/components/etcd/files/): container health of an etcd member.
# Healthy = this member answers, knows a leader, reports no errors and no alarm (a full
# database raises NOSPACE). Status and alarms need no credentials: with authentication on, an
# anonymous client may do nothing else (`etcdctl endpoint health` then fails: "user name is empty").
set -eu
ctl() { ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s "$@"; }
status=$(ctl endpoint status -w fields) || { echo "etcd does not answer on 127.0.0.1:2379"; exit 1; }
leader=$(printf '%s\n' "$status" | sed -n 's/^"Leader" : //p')
errors=$(printf '%s\n' "$status" | sed -n 's/^"Errors" : //p')
[ -n "$leader" ] && [ "$leader" != 0 ] || { echo "etcd member knows no leader (no quorum?)"; exit 1; }
[ "$errors" = "[]" ] || { echo "etcd member reports errors: $errors"; exit 1; }
alarms=$(ctl alarm list) || { echo "etcd alarm list failed"; exit 1; }
[ -z "$alarms" ] || { echo "etcd alarm: $alarms"; exit 1; }
