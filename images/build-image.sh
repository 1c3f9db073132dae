#!/bin/sh
# Build one image from a build context already shipped to this host (shipyard.apply.images
# runs it; usable by hand too):
#
#   sh build-image.sh [--wheelhouse REQUIREMENTS] REF SOURCE_HASH CONTEXT_DIR [ARG=VALUE...]
#
# --wheelhouse REQ  first build wheels with this host's python3 into CONTEXT_DIR/wheelhouse:
#                   every requirement of REQ (relative to CONTEXT_DIR) and the project in
#                   CONTEXT_DIR itself, so the image installs with `pip --no-index`
# ARG=VALUE         docker build --build-arg; BASE_IMAGE=... also names the image whose id
#                   is recorded in the label org.shipyard.base-id
#
# The image gets the labels org.shipyard.source-hash=SOURCE_HASH and org.shipyard.base-id.
# Output goes to CONTEXT_DIR.build.log; on failure its last lines are printed and the exit
# status is non-zero.
set -eu

tail_lines=60
wheel_reqs=
if [ "${1:-}" = --wheelhouse ]; then
    wheel_reqs=${2:?--wheelhouse needs a requirements file}
    shift 2
fi
ref=${1:?usage: build-image.sh [--wheelhouse REQ] REF SOURCE_HASH CONTEXT_DIR [ARG=VALUE...]}
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

if [ -n "$wheel_reqs" ]; then
    python3 -m pip --version >/dev/null 2>&1 || {
        echo "build-image.sh: the wheelhouse for $ref needs pip for this host's python3 (apt-get install python3-pip)" >&2
        exit 1
    }
    rm -rf "$context/wheelhouse"
    mkdir -p "$context/wheelhouse"
    echo "build-image.sh: wheelhouse for $ref with $(python3 --version 2>&1)"
    (
        cd "$context"
        python3 -m pip wheel --disable-pip-version-check --no-input -r "$wheel_reqs" -w wheelhouse &&
            python3 -m pip wheel --disable-pip-version-check --no-input --no-deps . -w wheelhouse
    ) >>"$log" 2>&1 || fail "building the wheelhouse for $ref failed"
fi

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
