#!/bin/sh
# Shipped by Shipyard (shipyard/components/etcd/files/): container health of an etcd member.
# Healthy = this member answers and its cluster has a leader: etcdctl's own check, a quorum read
# (with authentication on, "permission denied" to an anonymous client still proves the
# read went through consensus, which is what etcdctl counts as healthy).
exec env ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=3s endpoint health
