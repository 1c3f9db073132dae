#!/bin/sh
# Rendered by Shipyard (shipyard/components/elk/kibana.py): Kibana's data view of environment
# production's logs and its saved searches, through Kibana's own APIs, each with a fixed id (a
# re-run replaces them, never adds copies). Waits for Kibana a bounded time and says why it stops.
umask 077
set -eu
kibana="http://kibana:5601"
wait_s=300

printf 'Authorization: Basic %s\n' "$(printf 'elastic:%s' "$(cat "/run/secrets/elastic_password")" | base64 | tr -d '\n')" >/tmp/auth

# Kibana answers 503 ("Kibana server is not ready yet") until it has migrated its saved objects
# in Elasticsearch; its status API says 200 once it is available.
waited=0
until code=$(curl -s -o /tmp/answer -w '%{http_code}' "$kibana/api/status") && [ "$code" = 200 ]; do
    if [ "$waited" -ge "$wait_s" ]; then
        echo "kibana-setup: Kibana at $kibana is not available after ${wait_s}s (last answer ${code:-none}:" \
             "$(head -c 300 /tmp/answer 2>/dev/null)). Its log says why (\`make logs SERVICE=kibana\`): most" \
             "often kibana_system's password (set by logs-setup) or Elasticsearch not reachable;" \
             "logs.kibana.ready_timeout_s sets this wait" >&2
        exit 1
    fi
    sleep 3; waited=$((waited + 3))
done

send() {  # send <method> <path> <body file>: fails on any answer but 2xx, and prints it
    answer=$(curl -sS -o /tmp/answer -w '%{http_code}' -X "$1" "$kibana$2" -H @/tmp/auth \
             -H 'kbn-xsrf: shipyard' -H 'Content-Type: application/json' --data-binary "@$3") \
        || { echo "kibana-setup: $kibana$2: no answer" >&2; exit 1; }
    case "$answer" in
        2*) echo "kibana-setup: $1 $2: $answer" ;;
        *) echo "kibana-setup: $1 $2 answered $answer: $(cat /tmp/answer)" >&2; exit 1 ;;
    esac
}

cat >/tmp/body.json <<'BODY'
{"data_view": {"id": "shipyard-logs", "name": "Shipyard logs (production)", "timeFieldName": "@timestamp", "title": "shipyard-logs-production-*"}, "override": true}
BODY
send POST "/api/data_views/data_view" /tmp/body.json

cat >/tmp/body.json <<'BODY'
{"attributes": {"columns": ["host", "service", "level", "logger", "message", "error", "request_id"], "description": "Made by Shipyard's kibana-setup; a re-run replaces it (save a copy to change it).", "kibanaSavedObjectMeta": {"searchSourceJSON": "{\"filter\": [], \"indexRefName\": \"kibanaSavedObjectMeta.searchSourceJSON.index\", \"query\": {\"language\": \"kuery\", \"query\": \"level:error or level:critical\"}}"}, "sort": [["@timestamp", "desc"]], "title": "Errors (production)"}, "references": [{"id": "shipyard-logs", "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}]}
BODY
send POST "/api/saved_objects/search/shipyard-errors?overwrite=true" /tmp/body.json

cat >/tmp/body.json <<'BODY'
{"attributes": {"columns": ["host", "service", "format", "status", "latency_ms", "message", "task_id"], "description": "Made by Shipyard's kibana-setup; a re-run replaces it (save a copy to change it).", "kibanaSavedObjectMeta": {"searchSourceJSON": "{\"filter\": [], \"indexRefName\": \"kibanaSavedObjectMeta.searchSourceJSON.index\", \"query\": {\"language\": \"kuery\", \"query\": \"request_id:*\"}}"}, "sort": [["@timestamp", "desc"]], "title": "One request (set request_id) (production)"}, "references": [{"id": "shipyard-logs", "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}]}
BODY
send POST "/api/saved_objects/search/shipyard-one-request?overwrite=true" /tmp/body.json

cat >/tmp/body.json <<'BODY'
{"attributes": {"columns": ["host", "service", "method", "path", "status", "request_time_s", "request_id", "upstream"], "description": "Made by Shipyard's kibana-setup; a re-run replaces it (save a copy to change it).", "kibanaSavedObjectMeta": {"searchSourceJSON": "{\"filter\": [], \"indexRefName\": \"kibanaSavedObjectMeta.searchSourceJSON.index\", \"query\": {\"language\": \"kuery\", \"query\": \"format:access and status >= 500\"}}"}, "sort": [["@timestamp", "desc"]], "title": "Access logs: status >= 500 (production)"}, "references": [{"id": "shipyard-logs", "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}]}
BODY
send POST "/api/saved_objects/search/shipyard-server-errors?overwrite=true" /tmp/body.json
rm -f /tmp/auth
