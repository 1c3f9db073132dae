#!/bin/sh
# Entrypoint of shipyard/consul:1.8, with the official hashicorp/consul image's contract
# (written for Shipyard): `agent ...` (or a first argument that is an option) runs
# `consul agent -data-dir=/consul/data -config-dir=/consul/config ...` as the consul user once
# the data dir belongs to it; any other consul subcommand runs as given; anything else is exec'd.
set -eu
case "${1:-}" in
    -*) set -- agent "$@" ;;
esac
if [ "${1:-}" = agent ]; then
    shift
    set -- consul agent -data-dir=/consul/data -config-dir=/consul/config "$@"
    if [ "$(id -u)" = 0 ]; then
        # A fresh volume is root-owned: hand over what is not already consul's.
        find /consul/data \! -user consul -exec chown consul:consul '{}' + 2>/dev/null || true
        exec setpriv --reuid=consul --regid=consul --init-groups "$@"
    fi
elif [ -n "${1:-}" ] && consul "$1" -h >/dev/null 2>&1; then
    set -- consul "$@"  # `docker run IMAGE members`, like the official image
fi
exec "$@"
