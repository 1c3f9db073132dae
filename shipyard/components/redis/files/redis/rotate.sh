#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): a rotated Redis password taken by the
# running node (make secrets-rotate; shipyard/apply/rotation.py runs it in every node).
#   sh rotate.sh apply    accept the new password beside the old one; replicate with the new
#   sh rotate.sh retire   once every client has the new one: the old one is refused
# The new value is in /run/secrets/redis_auth.conf, the old in redis_auth.conf.retiring. Values
# go to redis-cli through its environment and stdin, never on a command line.
set -eu
password_in() { sed -n 's/^requirepass //p' "$1" 2>/dev/null || true; }
new=$(password_in /run/secrets/redis_auth.conf)
old=$(password_in /run/secrets/redis_auth.conf.retiring)
cli() {  # cli PASSWORD: commands on stdin
    REDISCLI_AUTH=$1 redis-cli --no-auth-warning -p 6379
}
auth=
for candidate in "$new" "$old"; do  # a rerun after a half-done rotation: the new one works already
    if [ -n "$candidate" ] && [ "$(echo PING | cli "$candidate")" = PONG ]; then
        auth=$candidate
        break
    fi
done
[ -n "$auth" ] || { echo "redis: neither the new nor the retiring password is accepted" >&2; exit 1; }
case $1 in
    apply) out=$(printf 'ACL SETUSER default on >%s\nCONFIG SET masterauth %s\n' "$new" "$new" | cli "$auth") ;;
    retire)
        [ -n "$old" ] && [ "$old" != "$new" ] || exit 0
        out=$(printf 'ACL SETUSER default <%s\n' "$old" | cli "$new")
        case $out in
            # A node that never had the old password (created while the rotation was pending) or
            # a rerun: nothing left to retire.
            *"password you are trying to remove from the user does not exist"*)
                echo "redis: retire: the old password is not set here"; exit 0 ;;
        esac ;;
    *) echo "usage: rotate.sh apply|retire" >&2; exit 2 ;;
esac
# redis-cli exits 0 on a command error: its replies decide.
if printf '%s\n' "$out" | grep -qv '^OK$'; then
    echo "redis: $1 of the new password failed: $out" >&2
    exit 1
fi
echo "redis: $1 done"
