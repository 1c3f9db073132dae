#!/bin/sh
# Build one image from a build context already shipped to this host (shipyard.apply.images
# runs it; usable by hand too):
#
#   sh build-image.sh REF SOURCE_HASH CONTEXT_DIR [ARG=VALUE...]
#
# A context that installs Python packages arrives with its wheelhouse/ inside (fetched once
# by the deploying machine for the image's own Python; see shipyard/controller/wheelhouse.py).
# ARG=VALUE         docker build --build-arg; BASE_IMAGE=... also names the image whose id
#                   is recorded in the label org.shipyard.base-id
#
# The image gets the labels org.shipyard.source-hash=SOURCE_HASH and org.shipyard.base-id.
# Output goes to CONTEXT_DIR.build.log; on failure its last lines are printed and the exit
# status is non-zero.
set -eu

tail_lines=60
ref=${1:?usage: build-image.sh REF SOURCE_HASH CONTEXT_DIR [ARG=VALUE...]}
source_hash=${2:?source hash missing}
context=${3:?context dir missing}
shift 3
log="${context%/}.build.log"
: >"$log"

fail() {
    echo "build-image.sh: $1; last $tail_lines lines of $log:" >&2
    tail -n "$tail_lines" "$log" >&2
    exit 1
}

base=
for arg in "$@"; do
    case "$arg" in BASE_IMAGE=*) base=${arg#BASE_IMAGE=} ;; esac
done
base_id=
if [ -n "$base" ]; then
    base_id=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
fi

# argv for docker build, built up as positional parameters (no word splitting anywhere)
n=$#
for arg in "$@"; do
    set -- "$@" --build-arg "$arg"
done
shift "$n"
set -- build --network host --force-rm --label "org.shipyard.source-hash=$source_hash" \
    --label "org.shipyard.base-id=$base_id" "$@" --tag "$ref" "$context"

echo "build-image.sh: docker $*"
started=$(date +%s)
docker "$@" >>"$log" 2>&1 || fail "docker build of $ref failed"
echo "build-image.sh: built $ref in $(( $(date +%s) - started ))s"
