# Rendered by Shipyard (shipyard/components/vault): the Vault-API (OpenBao) servers of local.
# What differs between instances comes from the compose service's environment, which OpenBao
# reads in place of the keys it would otherwise need here: BAO_RAFT_NODE_ID (storage "raft"
# node_id), BAO_API_ADDR (api_addr) and BAO_CLUSTER_ADDR (cluster_addr).
ui            = false
# No mlock setting: OpenBao 2.x dropped mlock (and warns of that key as unknown).
log_level     = "warn"
cluster_name  = "shipyard-local"

storage "raft" {
  path = "/openbao/file"
  # Raft's timings at their tightest (heartbeat and election 1 s, OpenBao's docs recommend it for
  # production servers): the default (5) makes a new cluster wait ~5 s before its first leader
  # at initialisation, and a lost leader as long to be replaced.
  performance_multiplier = 1
}

listener "tcp" {
  address         = ":8200"
  cluster_address = ":8201"
  # One bundle (key, certificate, CA): Go's loaders take the blocks they need from it.
  tls_cert_file   = "/run/secrets/tls.pem"
  tls_key_file    = "/run/secrets/tls.pem"
  tls_min_version = "tls12"
}

# Declared here, not enabled through the API: OpenBao refuses API-made audit devices (an API
# caller must not choose files the server writes). Request and response values are HMAC'd.
audit "file" "file" {
  description = "every request and response, secrets hashed"
  options {
    file_path = "/openbao/logs/audit.log"
  }
}
