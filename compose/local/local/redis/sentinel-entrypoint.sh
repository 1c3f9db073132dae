#!/bin/sh
# Rendered by Shipyard for environment local: start of a Sentinel.
#   sh sentinel-entrypoint.sh ANNOUNCE_HOST ANNOUNCE_PORT
# Seeds /data/sentinel.conf once; the password is read from the secret file here and lands only
# in that file (mode 0600, in the Sentinel's own volume), which Sentinel requires to hold it.
set -eu
if [ ! -s /data/sentinel.conf ]; then
    umask 077
    {
        cat /usr/local/etc/redis/sentinel.conf
        echo "sentinel announce-ip $1"
        echo "sentinel announce-port $2"
        printf 'sentinel auth-pass tasks %s\n' "$(cat /run/secrets/redis_password)"
    } >/data/sentinel.conf.new
    mv /data/sentinel.conf.new /data/sentinel.conf
    echo "seeded /data/sentinel.conf (monitor tasks at redis:6379)"
fi
# The image's entrypoint gives /data to the redis user and drops root.
exec docker-entrypoint.sh redis-server /data/sentinel.conf --sentinel
