#!/bin/sh
# Shipped by Shipyard (shipyard/components/consul/files/): the consul-agent-token job. Makes
# the servers' agent token, once, with the management token: a policy that lets them write
# their own nodes' catalog entries and nothing else, and a token whose SecretID is the stored
# secret `consul_agent_token` (the servers name it in their config from the start; until it
# exists, their catalog updates are refused and retried). Values are read from files and sent
# in request bodies and headers written to a private tmpfs, never on a command line.
# It makes Prometheus's metrics token (`consul_metrics_token`, agent:read) the same way.
set -eu
export CONSUL_HTTP_TOKEN_FILE=/run/secrets/management_token
policy=shipyard-consul-agents
umask 077
work=$(mktemp -d /dev/shm/agent-token.XXXXXX)
trap 'rm -rf "$work"' EXIT

make_token() {
    if consul acl token read -self -token-file=/run/secrets/agent_token >/dev/null 2>"$work/error"; then
        echo "the servers' agent token is in place"
        return 0
    fi
    if ! consul acl policy read -name "$policy" >/dev/null 2>&1; then
        consul acl policy create -name "$policy" -description "Consul servers (Shipyard): their own nodes" \
            -rules 'node_prefix "consul-" { policy = "write" }' >/dev/null 2>"$work/error" || return 1
    fi
    printf 'header = "X-Consul-Token: %s"\n' "$(cat /run/secrets/management_token)" >"$work/curl.conf"
    printf '{"SecretID": "%s", "Description": "agent token of the Consul servers", "Policies": [{"Name": "%s"}]}' \
        "$(cat /run/secrets/agent_token)" "$policy" >"$work/body.json"
    curl -fsS -o /dev/null -K "$work/curl.conf" -X PUT --data "@$work/body.json" \
        "$CONSUL_HTTP_ADDR/v1/acl/token" 2>"$work/error" || return 1
    echo "the servers' agent token made (policy $policy)"
}

# Prometheus's token: agent:read (the servers' /v1/agent/metrics), nothing else.
metrics_policy=shipyard-consul-metrics
make_metrics_token() {
    if consul acl token read -self -token-file=/run/secrets/metrics_token >/dev/null 2>"$work/error"; then
        echo "Prometheus's metrics token is in place"
        return 0
    fi
    if ! consul acl policy read -name "$metrics_policy" >/dev/null 2>&1; then
        consul acl policy create -name "$metrics_policy" -description "Prometheus (Shipyard): the agents' metrics" \
            -rules 'agent_prefix "" { policy = "read" }' >/dev/null 2>"$work/error" || return 1
    fi
    printf 'header = "X-Consul-Token: %s"\n' "$(cat /run/secrets/management_token)" >"$work/curl.conf"
    printf '{"SecretID": "%s", "Description": "Prometheus: agent metrics", "Policies": [{"Name": "%s"}]}' \
        "$(cat /run/secrets/metrics_token)" "$metrics_policy" >"$work/body.json"
    curl -fsS -o /dev/null -K "$work/curl.conf" -X PUT --data "@$work/body.json" \
        "$CONSUL_HTTP_ADDR/v1/acl/token" 2>"$work/error" || return 1
    echo "Prometheus's metrics token made (policy $metrics_policy)"
}

# Just after a leader is elected the ACL system may still answer "legacy mode" for a moment.
attempt=1
until make_token && make_metrics_token; do
    if [ "$attempt" -ge 30 ]; then
        echo "the servers' agent token or Prometheus's metrics token could not be made: $(cat "$work/error")" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done
