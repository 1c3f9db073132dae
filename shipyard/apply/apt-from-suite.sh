#!/bin/sh
# One package from another Debian suite, fetched with a private apt state (sources list, lists
# dir) pointed at the mirror this host already uses, so the host's own apt sources and package
# lists are left exactly as they were.
#   sh apt-from-suite.sh SUITE PACKAGE install            dpkg -i it
#   sh apt-from-suite.sh SUITE PACKAGE binary PATH DEST   only the file PATH of it, as DEST
# Used for Compose v2 on Debian 12 (bookworm's docker-compose is v1; trixie's needs only libc6
# >= 2.34, which bookworm has; shipped and run by shipyard.apply.engine) and for the tests' real
# Consul (bullseye's consul 1.8.7, whose binary links only libc and libpthread).
set -eu
suite=$1 package=$2 mode=$3

work=$(mktemp -d /tmp/shipyard-apt.XXXXXX)
chmod 755 "$work"  # apt downloads as its _apt user
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
         "install $package from $suite by hand" >&2
    exit 1
fi

mkdir -p "$work/lists/partial" "$work/archives/partial"
cat >"$work/suite.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

apt_private() {
    apt-get -qq -o Dir::Etc::sourcelist="$work/suite.sources" -o Dir::Etc::sourceparts=/nonexistent \
        -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives" "$@"
}

apt_private update
(cd "$work" && apt_private download "$package")
case $mode in
    install) dpkg -i "$work"/"$package"_*.deb ;;
    binary)
        dpkg-deb -x "$work"/"$package"_*.deb "$work/root"
        install -m 0755 "$work/root/$4" "$5" ;;
    *) echo "unknown mode $mode: install or binary" >&2; exit 2 ;;
esac
