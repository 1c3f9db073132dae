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
umask 077
work=$(mktemp -d /dev/shm/agent-token.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ensure_token <secret file> <policy> <policy description> <rules> <token description>: the
# token whose SecretID is in the file, with that one policy; made once (read back after).
ensure_token() {
    if consul acl token read -self -token-file="$1" >/dev/null 2>"$work/error"; then
        echo "$5: in place"
        return 0
    fi
    if ! consul acl policy read -name "$2" >/dev/null 2>&1; then
        consul acl policy create -name "$2" -description "$3" -rules "$4" >/dev/null 2>"$work/error" || return 1
    fi
    printf 'header = "X-Consul-Token: %s"\n' "$(cat /run/secrets/management_token)" >"$work/curl.conf"
    printf '{"SecretID": "%s", "Description": "%s", "Policies": [{"Name": "%s"}]}' \
        "$(cat "$1")" "$5" "$2" >"$work/body.json"
    curl -fsS -o /dev/null -K "$work/curl.conf" -X PUT --data "@$work/body.json" \
        "$CONSUL_HTTP_ADDR/v1/acl/token" 2>"$work/error" || return 1
    echo "$5: made (policy $2)"
}

make_token() {
    ensure_token /run/secrets/agent_token shipyard-consul-agents "Consul servers (Shipyard): their own nodes" \
        'node_prefix "consul-" { policy = "write" }' "agent token of the Consul servers"
}

# Prometheus's token: agent:read (the servers' /v1/agent/metrics), nothing else.
make_metrics_token() {
    ensure_token /run/secrets/metrics_token shipyard-consul-metrics "Prometheus (Shipyard): the agents' metrics" \
        'agent_prefix "" { policy = "read" }' "Prometheus: agent metrics"
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
