"""The environment's Vault CA and the servers' TLS bundle, as secrets of the environment's store.

The CA (``vault_ca_cert``, ``vault_ca_key``) is *held*: made once, kept age-encrypted in
``secrets/<env>/``, never delivered to a host. The servers' TLS is the secret ``vault_tls``, one
PEM bundle — private key, certificate, CA certificate — *issued* from that CA when it is missing
(Component.issued_secrets), delivered to every server as ``/run/secrets/tls.pem`` like any other
secret, and renewed by ``make secrets-rotate NAME=vault_tls``. One file serves as the listener's
key and certificate (Go's loaders pick the block types they want and skip the others) and as the
CA its peers check (the bundle's CA certificate). One certificate for every server of the
environment: they are one trust domain (raft peers), and a secret is per service, not per
instance; it names every server, ``localhost``, loopback and each server host's address.
"""

from __future__ import annotations

from pathlib import Path

from shipyard import tls as shared_tls
from shipyard import topology
from shipyard.components.vault import tls

CA_CERT, CA_KEY = "vault_ca_cert", "vault_ca_key"


def ensure_ca(repo: Path, settings, environ: dict[str, str] | None = None) -> tls.KeyPair:
    """The environment's CA: read from the store, or made once and stored."""
    return shared_tls.ensure_ca(repo, settings.name, (CA_CERT, CA_KEY), f"shipyard {settings.name} vault CA", environ)


def bundle_names(settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) the servers' certificate holds: every server's own."""
    names, addresses = [], []
    for inst in topology.build(settings).instances_of("vault", "vault"):
        more_names, more_addresses = tls.server_names(settings, inst)
        names += more_names
        addresses += more_addresses
    return tuple(dict.fromkeys(names)), tuple(dict.fromkeys(addresses))


def issue_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``vault_tls`` value: key, certificate and CA certificate, PEM (the issuer of the
    secret: shipyard.secretstore calls it when the secret is missing or rotated)."""
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    settings = load_environment(repo, env, environ)
    ca = ensure_ca(repo, settings, environ)
    names, addresses = bundle_names(settings)
    server = tls.server_cert(ca, names or ("localhost",), addresses or ("127.0.0.1",))
    return (server.key_pem + server.cert_pem + ca.cert_pem).decode()
