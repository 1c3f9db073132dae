#!/bin/sh
# The stand-in's entrypoint. osmem-server keeps nothing across a restart, so at every start it
# takes the index template again (Elasticsearch keeps it in its data; the logs-setup job puts it
# there once per deploy), from the same rendered setup script, mounted read-only.
#
# Nobody may write before the template is in: a shipper reaching the store first would create
# the day's index with dynamic mapping (and the template's _mapping step would then conflict).
# So osmem-server listens on loopback only (INNER_PORT, unreachable from other containers),
# takes the template there, and only then does the store's port (PORT) open: socat forwards it
# to osmem-server. Until then a shipper's connection is refused and its action retries (for
# ever); the health check (through PORT) passes only from then on. If either process ends, the
# other is stopped and the container exits: its restart starts again from the template.
# STAND_IN_PORT, STAND_IN_INNER_PORT, STAND_IN_SETUP: for tests/logship (defaults: the image's).
set -eu
port=${STAND_IN_PORT:-9200}
inner=${STAND_IN_INNER_PORT:-9201}
setup=${STAND_IN_SETUP:-/etc/logs-setup/setup.sh}

osmem-server -no-stdin-watch -addr "127.0.0.1:$inner" &
server=$!
forward=""
stop() {
    kill -TERM "$server" $forward 2>/dev/null || true
}
trap 'stop; exit 0' TERM INT
tries=0
until curl -s -o /dev/null "http://127.0.0.1:$inner/"; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "stand-in: osmem-server did not answer within 10 s" >&2; stop; exit 1; }
    sleep 0.1
done
if [ -f "$setup" ]; then
    STORE="http://127.0.0.1:$inner" sh "$setup" || { echo "stand-in: the index template was not applied" >&2; stop; exit 1; }
fi
socat "TCP-LISTEN:$port,fork,reuseaddr" "TCP:127.0.0.1:$inner" &
forward=$!
echo "stand-in: template in; the store's port $port is open"
while kill -0 "$server" 2>/dev/null && kill -0 "$forward" 2>/dev/null; do
    sleep 1
done
echo "stand-in: osmem-server or the forwarder ended; stopping (the container's restart starts afresh)" >&2
stop
exit 1
