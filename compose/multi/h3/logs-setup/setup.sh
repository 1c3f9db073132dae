#!/bin/sh
# Rendered by Shipyard (shipyard/components/elk): puts the index template of environment multi into the log store before any shipper
# writes (a daily index takes its mapping when it is created). Idempotent: a PUT replaces.
set -eu
# STORE: the stand-in store applies this script to itself at its start (image/logstore).
store="${STORE:-http://elasticsearch-1:9200}"

put() {  # put <path> <file> [an answer also taken]: fails on any other answer but 2xx, and prints it
    answer=$(curl -sS -o /tmp/answer -w '%{http_code}' -X PUT "$store$1" \
             -H 'Content-Type: application/json' --data-binary "@$2") || { echo "logs-setup: $store$1: no answer" >&2; exit 1; }
    case "$answer" in
        2*|"${3:-2xx}") echo "logs-setup: PUT $1: $answer" ;;
        *) echo "logs-setup: PUT $1 answered $answer: $(cat /tmp/answer)" >&2; exit 1 ;;
    esac
}
put "/_index_template/shipyard-logs-multi" "/etc/logs-setup/index-template.json"
# The template applies to indices created from now on; today's may exist already: its mapping
# gets the fields this version added (a mapping only grows). 404: no index yet.
put "/shipyard-logs-multi-*/_mapping?allow_no_indices=true&ignore_unavailable=true" "/etc/logs-setup/mappings.json" 404
