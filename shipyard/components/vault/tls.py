"""The environment's own CA and the Vault servers' certificates (PEM), with ``cryptography``.

Pure: values in, PEM bytes out; nothing is written here. The CA's key and the servers' keys are
secrets: the deploy keeps them age-encrypted like any other and delivers each server its files
(``ca.crt``, ``server.crt``, ``server.key``) — that delivery is the next slice. The tests make
their CA and their server's certificate with these same functions.
"""

from __future__ import annotations

from shipyard.tls import KeyPair, instance_names, server_cert
from shipyard.tls import new_ca as _new_ca

__all__ = ["KeyPair", "new_ca", "server_cert", "server_names"]


def new_ca(env: str, days: int = 3650) -> KeyPair:
    """A self-signed CA for one environment's Vault servers (and nothing else: path length 0)."""
    return _new_ca(f"shipyard {env} vault CA", days)


def server_names(settings, instance) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) a server's certificate must hold (shipyard.tls.instance_names)."""
    return instance_names(instance)
