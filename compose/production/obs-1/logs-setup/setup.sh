#!/bin/sh
# Rendered by Shipyard (shipyard/components/elk): puts the index template and the
# lifecycle policy of environment production into the log store before any shipper
# writes (a daily index takes its mapping when it is created). Idempotent: a PUT replaces.
# Also the roles and users of shipyard/components/elk/security.py, and EVERY password at EVERY
# run: the store keeps its users in its data volume, so a password set only at its first start
# would be ignored from then on. Passwords are read from the secret files by the shell's own
# printf into files of /tmp (a tmpfs): they are in no process's arguments and in no output.
umask 077
set -eu
# STORE: the stand-in store applies this script to itself at its start (image/logstore).
store="${STORE:-https://elasticsearch-1:9200}"
# HTTPS: the node's certificate is checked against the CA that issued it (and its name).
store_ca="/run/secrets/store-ca.crt"
# Bounded waits: a store that does not answer fails this job with what it last said.
wait_s=300

auth_as() {  # auth_as <file>: elastic's password from that file, as a header file for curl
    printf 'Authorization: Basic %s\n' "$(printf 'elastic:%s' "$(cat "$1")" | base64 | tr -d '\n')" >/tmp/auth
}

status_of() {  # status_of <path>: the HTTP status of a GET as elastic (000: no answer)
    curl -s -o /tmp/answer -w '%{http_code}' --cacert "$store_ca" -H @/tmp/auth "$store$1" || true
}

send() {  # send <method> <path> <body file> [an answer also taken]: fails on any other answer but 2xx, and prints it
    answer=$(curl -sS -o /tmp/answer -w '%{http_code}' --cacert "$store_ca" -X "$1" "$store$2" -H @/tmp/auth \
             -H 'Content-Type: application/json' --data-binary "@$3") || { echo "logs-setup: $store$2: no answer" >&2; exit 1; }
    case "$answer" in
        2*|"${4:-2xx}") echo "logs-setup: $1 $2: $answer" ;;
        *) echo "logs-setup: $1 $2 answered $answer: $(cat /tmp/answer)" >&2; exit 1 ;;
    esac
}

put() {  # put <path> <file> [an answer also taken]
    send PUT "$1" "$2" "${3:-}"
}

with_password() {  # with_password <printf format file> <password file> <out>: the body, password in its slot
    printf "$(cat "$1")" "$(cat "$2")" >"$3"
}

# 1. elastic logs in: with its secret, or during a rotation with the value it replaces (then
#    the new one is set first). 503 while the cluster forms (no master, no security index yet).
waited=0
while :; do
    auth_as "/run/secrets/elastic_password"
    code=$(status_of /_security/_authenticate)
    if [ "$code" = 401 ] && [ -f "/run/secrets/elastic_password.retiring" ]; then
        auth_as "/run/secrets/elastic_password.retiring"
        if [ "$(status_of /_security/_authenticate)" = 200 ]; then
            cat >/tmp/elastic.fmt <<'BODY'
{"password": "%s"}
BODY
            with_password /tmp/elastic.fmt "/run/secrets/elastic_password" /tmp/body
            send POST /_security/user/elastic/_password /tmp/body
            echo "logs-setup: elastic's rotated password is set (logged in with the one it replaces)"
            continue
        fi
    fi
    case "$code" in
        200) break ;;
        401) echo "logs-setup: the store refuses elastic's password (and the one a rotation replaces): it was" \
                  "changed outside Shipyard. Fix: set it to the stored secret with" \
                  "\`docker compose exec elasticsearch-1 bin/elasticsearch-reset-password -u elastic -i\`" \
                  "(the value of secrets/production/elastic_password.age), then run the deploy again" >&2; exit 1 ;;
    esac
    if [ "$waited" -ge "$wait_s" ]; then
        echo "logs-setup: the store at $store did not let elastic in within ${wait_s}s (last answer $code:" \
             "$(cat /tmp/answer 2>/dev/null); 000: no answer, or a certificate not of the CA in $store_ca" \
             "for that name — \`make secrets-rotate NAME=elasticsearch_http_tls\` issues one);" \
             "see \`make logs SERVICE=elasticsearch\`" >&2
        exit 1
    fi
    sleep 2; waited=$((waited + 2))
done
code=$(status_of "/_cluster/health?wait_for_status=yellow&timeout=${wait_s}s")
[ "$code" = 200 ] || { echo "logs-setup: the cluster is not yellow within ${wait_s}s: $code $(cat /tmp/answer)" >&2; exit 1; }
put "/_ilm/policy/shipyard-logs" "/etc/logs-setup/lifecycle-policy.json"
put "/_index_template/shipyard-logs-production" "/etc/logs-setup/index-template.json"
# The template applies to indices created from now on; today's may exist already: its mapping
# gets the fields this version added (a mapping only grows). 404: no index yet.
put "/shipyard-logs-production-*/_mapping?allow_no_indices=true&ignore_unavailable=true" "/etc/logs-setup/mappings.json" 404

# 2. Roles (PUT _security/role/<name> replaces one).
cat >/tmp/role.json <<'BODY'
{"cluster": [], "indices": [{"names": ["shipyard-logs-production-*"], "privileges": ["create_index", "create_doc", "index"]}], "metadata": {"managed_by": "shipyard"}}
BODY
put "/_security/role/shipyard_logship" /tmp/role.json
cat >/tmp/role.json <<'BODY'
{"cluster": [], "indices": [{"names": ["shipyard-logs-production-*"], "privileges": ["read", "view_index_metadata"]}], "metadata": {"managed_by": "shipyard"}}
BODY
put "/_security/role/shipyard_logs_reader" /tmp/role.json

# 3. Every other password, at every run (and the native users' roles); elastic's is step 1's.
cat >/tmp/user.fmt <<'BODY'
{"password": "%s"}
BODY
with_password /tmp/user.fmt "/run/secrets/kibana_system_password" /tmp/body
send POST "/_security/user/kibana_system/_password" /tmp/body
cat >/tmp/user.fmt <<'BODY'
{"enabled": true, "full_name": "the log shippers (write only)", "metadata": {"managed_by": "shipyard"}, "password": "%s", "roles": ["shipyard_logship"]}
BODY
with_password /tmp/user.fmt "/run/secrets/logship_password" /tmp/body
send PUT "/_security/user/logship" /tmp/body
cat >/tmp/user.fmt <<'BODY'
{"enabled": true, "full_name": "reads the logs (make trace)", "metadata": {"managed_by": "shipyard"}, "password": "%s", "roles": ["shipyard_logs_reader"]}
BODY
with_password /tmp/user.fmt "/run/secrets/logs_reader_password" /tmp/body
send PUT "/_security/user/logs_reader" /tmp/body
rm -f /tmp/auth /tmp/body
