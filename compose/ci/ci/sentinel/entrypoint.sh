#!/bin/sh
# Rendered by Shipyard for environment ci: start of a Sentinel.
#   sh entrypoint.sh ANNOUNCE_HOST ANNOUNCE_PORT
# Seeds /data/sentinel.conf once; the password is read from the secret file here and lands only
# in that file (mode 0600, in the Sentinel's own volume), which Sentinel requires to hold it.
# On every start the settings' tunables (quorum, down-after, failover timeout) and the password
# are written into it again; what Sentinel learned (the current master, replicas, peers,
# epochs) is kept, so a re-deploy changes what the settings say and nothing else.
set -eu
if [ ! -s /data/sentinel.conf ]; then
    umask 077
    {
        cat /usr/local/etc/redis-sentinel/sentinel.conf
        echo "sentinel announce-ip $1"
        echo "sentinel announce-port $2"
    } >/data/sentinel.conf.new
    mv /data/sentinel.conf.new /data/sentinel.conf
    echo "seeded /data/sentinel.conf (monitor tasks at redis:6379)"
fi
conf=/data/sentinel.conf
# set_option KEY VALUE: "sentinel KEY tasks VALUE", replaced or (Sentinel leaves out defaults) added.
set_option() {
    if grep -q "^sentinel $1 tasks " "$conf"; then
        sed -i "s/^sentinel $1 tasks .*/sentinel $1 tasks $2/" "$conf"
    else
        echo "sentinel $1 tasks $2" >>"$conf"
    fi
}
# The quorum is the last field of the monitor line; its master address is Sentinel's to keep.
sed -i "s/^\(sentinel monitor tasks [^ ]* [0-9]*\) [0-9]*$/\1 2/" "$conf"
set_option down-after-milliseconds 5000
set_option failover-timeout 30000
umask 077
{ grep -v "^sentinel auth-pass tasks " "$conf"
  printf 'sentinel auth-pass tasks %s\n' "$(cat /run/secrets/redis_password)"; } >"$conf.new"
mv "$conf.new" "$conf"
# The image's entrypoint gives /data to the redis user and drops root.
exec docker-entrypoint.sh redis-server /data/sentinel.conf --sentinel
