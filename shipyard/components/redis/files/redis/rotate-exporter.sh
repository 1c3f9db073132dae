#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): a rotated password of the exporters'
# ACL user taken by the running node (make secrets-rotate; shipyard/apply/rotation.py runs it).
#   sh rotate-exporter.sh apply    the user accepts the new password beside the old one
#   sh rotate-exporter.sh retire   once every exporter has the new one: the old one is refused
# The new value is in /run/secrets/redis_exporter_acl.conf, the old in its .retiring; the node is
# reached as the default user (redis_auth.conf). Values go to redis-cli through its environment
# and stdin, never on a command line.
set -eu
password_in() { sed -n 's/^user redis_exporter on >\([^ ]*\) .*/\1/p' "$1" 2>/dev/null || true; }
new=$(password_in /run/secrets/redis_exporter_acl.conf)
old=$(password_in /run/secrets/redis_exporter_acl.conf.retiring)
REDISCLI_AUTH=$(sed -n 's/^requirepass //p' /run/secrets/redis_auth.conf)
export REDISCLI_AUTH
[ -n "$new" ] || { echo "redis: no exporter password in /run/secrets/redis_exporter_acl.conf" >&2; exit 1; }
case $1 in
    apply) out=$(printf 'ACL SETUSER redis_exporter >%s\n' "$new" | redis-cli --no-auth-warning -p 6379) ;;
    retire)
        [ -n "$old" ] && [ "$old" != "$new" ] || exit 0
        out=$(printf 'ACL SETUSER redis_exporter <%s\n' "$old" | redis-cli --no-auth-warning -p 6379) ;;
    *) echo "usage: rotate-exporter.sh apply|retire" >&2; exit 2 ;;
esac
# redis-cli exits 0 on a command error: its replies decide.
if printf '%s\n' "$out" | grep -qv '^OK$'; then
    echo "redis: $1 of the exporters' new password failed: $out" >&2
    exit 1
fi
echo "redis: exporters' password $1 done"
