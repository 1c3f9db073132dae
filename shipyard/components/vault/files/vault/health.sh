#!/bin/sh
# Healthy = this server answers on its TLS listener, sealed or not. `bao status` exits 0 when
# unsealed, 2 when sealed and 1 when it cannot ask: the deploy initialises and unseals the
# servers after their health gate, so a sealed server is up, not broken.
bao status -address="https://127.0.0.1:${VAULT_API_PORT:-8200}" -ca-cert=/run/secrets/tls.pem >/dev/null 2>&1
[ "$?" -ne 1 ]
