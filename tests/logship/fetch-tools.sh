#!/bin/sh
# The real programs tests/logship runs on loopback, into DEST (a cache of the checkout, never the
# host's system): Debian bookworm's rsyslog 8.2302 with rsyslog-elasticsearch, rsyslog-gnutls (the
# shippers' TLS to Logstash) and the two libraries the host may lack, unpacked (dpkg -x: no
# service installed or started), and the osmem-server binary from its pinned PyPI wheel (the
# stand-in store's). socat: the stand-in's entrypoint forwards the store's port with it (Debian's,
# on the host like the image's).
#   sh tests/logship/fetch-tools.sh DEST PYTHON
set -eu
dest=$1 python=$2
osmem=osmem-server==0.1.6
mkdir -p "$dest/debs" "$dest/root" "$dest/wheels"
if [ ! -x "$dest/root/usr/sbin/rsyslogd" ] || [ ! -e "$dest/root/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so" ]; then
    apt-get update -qq
    (cd "$dest/debs" && apt-get download -qq rsyslog rsyslog-elasticsearch rsyslog-gnutls libestr0 libfastjson4 2>/dev/null)
    for deb in "$dest"/debs/*.deb; do dpkg -x "$deb" "$dest/root"; done
fi
if [ ! -x "$dest/osmem-server" ]; then
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: "$osmem" -d "$dest/wheels"
    unzip -p "$dest"/wheels/osmem_server-*.whl osmem_server/bin/osmem-server >"$dest/osmem-server.tmp"
    chmod 0755 "$dest/osmem-server.tmp" && mv "$dest/osmem-server.tmp" "$dest/osmem-server"
fi
command -v socat >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends socat >/dev/null; }
