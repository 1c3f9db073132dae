#!/bin/sh
# Entrypoint of shipyard/redis:7.0, with the official redis image's contract (written for
# Shipyard): a first argument that is an option or a *.conf file means redis-server; started
# as root, `redis-server ...`, `redis-server FILE --sentinel` and `redis-sentinel FILE` run as
# redis (uid 999) once the working directory (/data) belongs to it; anything else runs as given.
set -eu

# `docker run IMAGE --port 7000` or `docker run IMAGE /path/redis.conf`
case "${1:-}" in
    -*|*.conf) set -- redis-server "$@" ;;
esac

sentinel=no
[ "${1:-}" = redis-sentinel ] && sentinel=yes
for arg in "$@"; do
    [ "$arg" = --sentinel ] && sentinel=yes
done

if { [ "${1:-}" = redis-server ] || [ "${1:-}" = redis-sentinel ]; } && [ "$(id -u)" = 0 ]; then
    # A fresh volume is root-owned: hand over what is not already redis's.
    find . \! -user redis -exec chown redis: '{}' + 2>/dev/null || true
    if [ "$sentinel" = yes ]; then
        # Sentinel rewrites its config file (it refuses to start otherwise): a writable file
        # given by root is handed to redis. A read-only mount is the deployment's mistake.
        for arg in "$@"; do
            case "$arg" in
                *.conf) [ -f "$arg" ] && [ -w "$arg" ] && chown redis: "$arg" 2>/dev/null || true ;;
            esac
        done
    fi
    export HOME=/var/lib/redis USER=redis LOGNAME=redis
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# New files private to redis unless the caller chose a umask (as the official image does).
if [ "$(umask)" = 0022 ]; then
    umask 0077
fi
exec "$@"
