#!/bin/sh
# Compose v2 on Debian 12: bookworm's docker-compose is v1; trixie's docker-compose (v2) needs
# only libc6 >= 2.34, which bookworm has. Fetch it with a private apt state (sources list,
# lists dir) pointed at the mirror this host already uses, so the host's own apt sources and
# package lists are left exactly as they were. Shipped and run by shipyard.apply.engine.
set -eu

work=$(mktemp -d /tmp/shipyard-compose.XXXXXX)
trap 'rm -rf "$work"' EXIT

mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list;" \
         "install Compose v2 by hand (docker compose version must print 2.x)" >&2
    exit 1
fi

mkdir -p "$work/lists/partial" "$work/archives/partial"
cat >"$work/trixie.sources" <<EOF
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

apt_private() {
    apt-get -qq -o Dir::Etc::sourcelist="$work/trixie.sources" -o Dir::Etc::sourceparts=/nonexistent \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" "$@"
}

apt_private update
(cd "$work" && apt_private download docker-compose)
dpkg -i "$work"/docker-compose_*.deb
docker compose version
