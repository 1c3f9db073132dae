#!/bin/sh
# Shipped by Shipyard (shipyard/components/redis/files/): start of a Sentinel.
# Environment (set by the render): REDIS_MASTER_NAME, REDIS_QUORUM, REDIS_DOWN_AFTER_MS,
# REDIS_FAILOVER_TIMEOUT_MS; the seed sentinel.conf sits next to this script.
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
        cat "$(dirname "$0")/sentinel.conf"
        echo "sentinel announce-ip $1"
        echo "sentinel announce-port $2"
    } >/data/sentinel.conf.new
    mv /data/sentinel.conf.new /data/sentinel.conf
    echo "seeded /data/sentinel.conf ($(grep '^sentinel monitor' /data/sentinel.conf))"
fi
conf=/data/sentinel.conf
# set_option KEY VALUE: "sentinel KEY $REDIS_MASTER_NAME VALUE", replaced or (Sentinel leaves out defaults) added.
set_option() {
    if grep -q "^sentinel $1 $REDIS_MASTER_NAME " "$conf"; then
        sed -i "s/^sentinel $1 $REDIS_MASTER_NAME .*/sentinel $1 $REDIS_MASTER_NAME $2/" "$conf"
    else
        echo "sentinel $1 $REDIS_MASTER_NAME $2" >>"$conf"
    fi
}
# The quorum is the last field of the monitor line; its master address is Sentinel's to keep.
sed -i "s/^\(sentinel monitor $REDIS_MASTER_NAME [^ ]* [0-9]*\) [0-9]*$/\1 $REDIS_QUORUM/" "$conf"
set_option down-after-milliseconds "$REDIS_DOWN_AFTER_MS"
set_option failover-timeout "$REDIS_FAILOVER_TIMEOUT_MS"
umask 077
# The master's password (to monitor it), this Sentinel's own password for its clients
# (requirepass) and the one it gives its peers (sentinel-pass): the same secret on every Sentinel.
# Sentinel's CONFIG REWRITE records the default user as an ACL line ("user default on nopass
# ..."), which would win over requirepass at the next start: it goes, requirepass decides.
# The exporter's own ACL user (read-only: INFO and the SENTINEL queries it makes), written
# afresh at each start like the passwords (a rewrite records it hashed).
{ grep -v -e "^sentinel auth-pass $REDIS_MASTER_NAME " -e "^requirepass " -e "^sentinel sentinel-pass " \
       -e "^user default " -e "^user redis_exporter " "$conf"
  printf 'sentinel auth-pass %s %s\n' "$REDIS_MASTER_NAME" "$(cat /run/secrets/redis_password)"
  printf 'requirepass %s\n' "$(cat /run/secrets/sentinel_password)"
  printf 'sentinel sentinel-pass %s\n' "$(cat /run/secrets/sentinel_password)"
  printf 'user redis_exporter on >%s resetkeys resetchannels -@all +ping +info +client|setname +sentinel|masters +sentinel|master +sentinel|sentinels +sentinel|slaves +sentinel|replicas\n' \
      "$(cat /run/secrets/redis_exporter_password)"; } >"$conf.new"
mv "$conf.new" "$conf"
# The image's entrypoint gives /data to the redis user and drops root.
exec docker-entrypoint.sh redis-server /data/sentinel.conf --sentinel
