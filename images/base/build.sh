#!/bin/sh
# Build the root image of the local image source: Debian bookworm (minbase) from the
# mirror this host already uses, imported into Docker. Run as root on the target host:
#
#   sh images/base/build.sh REF SOURCE_HASH
#
# REF          image to produce (shipyard/base:bookworm)
# SOURCE_HASH  recorded as label org.shipyard.source-hash (the deploy rebuilds when it differs)
#
# Tunables next to this script: packages.txt (extra packages), apt-slim.conf and
# dpkg-nodoc.cfg (apt/dpkg settings of the image). SHIPYARD_DEBIAN_MIRROR and
# SHIPYARD_DEBIAN_SECURITY_MIRROR override the mirrors read from the host's apt sources.
set -eu

ref=${1:?usage: build.sh REF SOURCE_HASH}
source_hash=${2:?usage: build.sh REF SOURCE_HASH}
suite=bookworm
here=$(cd "$(dirname "$0")" && pwd)

command -v debootstrap >/dev/null 2>&1 || {
    echo "build.sh: debootstrap is not installed on this host (apt-get install debootstrap)" >&2
    exit 1
}

# The first URI of the host's apt sources that serves $suite (deb822 .sources files or
# one-line sources.list format); pattern $2 picks the plain archive vs the security archive.
host_mirror() {
    want=$1
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v want="$want" -v suite="$suite" '
            function flush() {
                if (uris != "" && types ~ /(^| )deb( |$)/ && suites ~ ("(^| )" suite want "( |$)")) {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                uris = ""; suites = ""; types = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "uris:"   { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            tolower($1) == "types:"  { $1 = ""; types = $0 }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v want="$want" -v suite="$suite" '$1 == "deb" && $3 == suite want { print $2; exit }'
    done
}

mirror=${SHIPYARD_DEBIAN_MIRROR:-$(host_mirror "" | head -n 1)}
security=${SHIPYARD_DEBIAN_SECURITY_MIRROR:-$(host_mirror "-security" | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
security=${security%/}

include=$(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \t\n' '\n' | grep -v '^$' | paste -sd, -)

work=$(mktemp -d "${TMPDIR:-/var/tmp}/shipyard-base.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/rootfs
log=$work/debootstrap.log

echo "build.sh: debootstrap $suite from $mirror (+ ${include:-nothing})"
if ! debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$root" "$mirror" >"$log" 2>&1; then
    echo "build.sh: debootstrap failed; last lines of its log:" >&2
    tail -n 40 "$log" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
    exit 1
fi

# apt sources of the image: the same mirrors as the host, with updates and security.
rm -f "$root/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$mirror" "$suite" "$suite"
    if [ -n "$security" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$security" "$suite"
    fi
} >"$root/etc/apt/sources.list.d/debian.sources"

# Container conventions of the official debian images: no daemons started by package
# scripts, no caches or docs kept, no recommends.
cat >"$root/usr/sbin/policy-rc.d" <<'POLICY'
#!/bin/sh
# Inside an image build no service is started by a package's maintainer scripts.
exit 101
POLICY
chmod 0755 "$root/usr/sbin/policy-rc.d"
install -m 0644 "$here/apt-slim.conf" "$root/etc/apt/apt.conf.d/docker-slim"
install -m 0644 "$here/dpkg-nodoc.cfg" "$root/etc/dpkg/dpkg.cfg.d/docker-slim"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" <<'DPKG'
force-unsafe-io
DPKG

# Drop what debootstrap left behind that an image should not carry.
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* \
       "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb \
       "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old \
       "$root/var/log/"*.log "$root/var/log/apt/"* "$root/debootstrap" "$root/tmp/"* "$root/root/".bash_history
: >"$root/etc/machine-id" 2>/dev/null || true
printf 'shipyard\n' >"$root/etc/hostname"

echo "build.sh: importing $ref"
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    --change "LABEL org.shipyard.source-hash=\"$source_hash\"" \
    --change 'LABEL org.opencontainers.image.title="shipyard-base"' \
    --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase from $mirror, built by Shipyard\"" \
    --change "LABEL org.opencontainers.image.base.name=\"debian:$suite\"" \
    - "$ref" >/dev/null
echo "build.sh: built $ref"
