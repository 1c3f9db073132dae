#!/bin/sh
# The stand-in's entrypoint: osmem-server keeps nothing across a restart, so at every start it
# takes the index template again (Elasticsearch keeps it in its data; the logs-setup job puts it
# there once per deploy), from the same rendered setup script, mounted read-only. A shipper
# that reaches the store in the moment before that creates the day's index with dynamic mapping
# (every field still searchable by its exact value); docs/logs.md says so.
set -eu
osmem-server -no-stdin-watch -addr 0.0.0.0:9200 &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
tries=0
until curl -s -o /dev/null http://127.0.0.1:9200/; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { echo "stand-in: osmem-server did not answer within 10 s" >&2; exit 1; }
    sleep 0.1
done
if [ -f /etc/logs-setup/setup.sh ]; then
    STORE=http://127.0.0.1:9200 sh /etc/logs-setup/setup.sh
fi
wait "$server"
