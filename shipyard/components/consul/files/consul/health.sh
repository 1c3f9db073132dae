#!/bin/sh
# Shipped by Shipyard (shipyard/components/consul/files/): container health of a Consul
# server: a leader is elected and every server of the environment is a raft peer. The status
# endpoints answer without a token, so no secret is needed here.
set -eu
leader=$(curl -fsS http://127.0.0.1:8500/v1/status/leader)
case "$leader" in
    *:8300*) ;;
    *) echo "no leader elected yet"; exit 1 ;;
esac
peers=$(curl -fsS http://127.0.0.1:8500/v1/status/peers | tr ',' '\n' | grep -c ':8300' || true)
if [ "$peers" != "$CONSUL_SERVERS" ]; then
    echo "$peers of $CONSUL_SERVERS servers are raft peers"
    exit 1
fi
