"""The `production` example: host groups over SSH. No such hosts exist here; it renders
and validates (`make render`, unit tests) so the multi-host model stays honest.

Each host's `address` is its private address: other hosts reach its published ports there,
and data ports bind only to it (never 0.0.0.0).
"""

SHIPYARD = {
    "name": "production",
    # Pinned upstream tags through the site's registry mirror.
    "images": {"source": "official", "mirror": "registry.internal.example:5000"},
    "ports": {"edge_http": 80, "edge_https": 443, "edge_bind": "0.0.0.0"},
    # HTTPS at the edge; plain HTTP answers 308 to it (docs/security.md, "TLS at the edge"). The
    # certificate comes from the environment's own edge CA (its clients must trust that CA). For a
    # publicly trusted one, from your ACME client (or corporate CA): write its fullchain.pem into
    # the checkout, `make secrets-put ENV=production NAME=edge_tls_key FILE=.../privkey.pem`, and
    # set "tls": {"mode": "files", "chain_file": "secrets/production/edge-fullchain.pem"}; each
    # deploy then delivers the chain and key as they are (a renewed chain: commit it and deploy).
    "edge": {"tls": {"mode": "ca", "names": ["api.prod.example.net"]}},
    "postgres": {"max_connections": 300, "shared_buffers_mb": 1024, "memory_limit_mb": 4096},
    "redis": {"maxmemory_mb": 1024, "memory_limit_mb": 1536},
    "app": {"api_processes": 4, "worker_replicas": 2, "memory_limit_mb": 1024},
    "runtime": {"rate_limit_per_minute": 1200, "worker_concurrency": 8},
    # Three servers, one per control host: a raft quorum that survives the loss of one host.
    "consul": {"servers": 3},
    # Vault (OpenBao): initialised, unsealed and bootstrapped by every deploy (docs/secrets.md);
    # three servers, one per control host, like Consul's.
    "vault": {"enabled": True, "servers": 3},
}

# A non-root user, root by passwordless sudo on each host (docs/deploy.md: SSH users).
_deploy = {"ssh_user": "deploy", "_sudo": True}

edge = [
    ("edge-1.prod.example.net", {**_deploy, "shipyard_host": "edge-1", "address": "10.0.0.10"}),
]
app = [
    ("app-1.prod.example.net", {**_deploy, "shipyard_host": "app-1", "address": "10.0.1.11"}),
    ("app-2.prod.example.net", {**_deploy, "shipyard_host": "app-2", "address": "10.0.1.12"}),
]
data = [
    ("data-1.prod.example.net", {**_deploy, "shipyard_host": "data-1", "address": "10.0.2.21"}),
]
# Consul's (and Vault's) servers (one each): they publish their raft and gossip ports on these addresses.
control = [*app, data[0]]
observability = [
    ("obs-1.prod.example.net", {**_deploy, "shipyard_host": "obs-1", "address": "10.0.3.31"}),
]
