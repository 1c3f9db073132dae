#!/bin/sh
# The real Consul for the task platform's tests (make host-test-deps): Debian 11 (bullseye)
# still ships consul 1.8.7, whose binary links only libc and libpthread and runs on bookworm.
# Fetched with a private apt state (sources list, lists dir) pointed at the mirror this host
# already uses, so the host's own apt sources and package lists stay as they were; only the
# binary is installed, as /usr/local/bin/consul (no service, no user).
set -eu

work=$(mktemp -d /tmp/shipyard-consul.XXXXXX)
chmod 755 "$work"  # apt downloads as its _apt user
trap 'rm -rf "$work"' EXIT

mirror=""
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found in the host's apt sources; put a consul 1.8+ binary on PATH" >&2; exit 1; }

mkdir -p "$work/lists/partial" "$work/archives/partial"
printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" >"$work/bullseye.sources"
apt_private() {
    apt-get -qq -o Dir::Etc::sourcelist="$work/bullseye.sources" -o Dir::Etc::sourceparts=/nonexistent \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" "$@"
}
apt_private update
(cd "$work" && apt_private download consul)
dpkg-deb -x "$work"/consul_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/consul" /usr/local/bin/consul
/usr/local/bin/consul version | head -1
