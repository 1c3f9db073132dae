#!/bin/sh
# The registry's entrypoint under both image sources: distribution reads http.secret from its
# config file or from REGISTRY_HTTP_SECRET, and the config file is rendered into compose/
# (committed), so the secret comes from its file here into this process's environment only —
# never compose's, so never `docker inspect`. Then the command (`registry serve <config>`).
# HTTP_SECRET_FILE moves the file (tests/registry run it outside a container); not REGISTRY_*,
# which distribution would read as a config key.
set -eu
secret=${HTTP_SECRET_FILE:-/run/secrets/registry.http-secret}
[ -s "$secret" ] || { echo "start.sh: $secret is missing or empty: the deploy delivers it (make up ENV=..)" >&2; exit 1; }
REGISTRY_HTTP_SECRET=$(cat "$secret")
export REGISTRY_HTTP_SECRET
exec "$@"
