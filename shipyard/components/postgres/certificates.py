"""pgBackRest's TLS once the nodes span hosts (pgbackrest.py, "a repository server").

``pgbackrest_ca_cert``, ``pgbackrest_ca_key``: the environment's pgBackRest CA, *held* (made once
on the deploying machine, never delivered). ``pgbackrest_tls``: one bundle — key, certificate,
CA certificate — issued from it when missing, delivered to every node and to the repository's
server as three files (``/run/secrets/pgbackrest.{key,crt}``, ``pgbackrest-ca.crt``); renewed by
``make secrets-rotate NAME=pgbackrest_tls``. One certificate for every party: its CN is the name
each server authorises for the stanza (``tls-server-auth``), and its names are every server's as
the others reach it. pgBackRest 2.45 matches a server against the certificate's DNS names and CN
only, so each host address is in it as a DNS name too (and as an IP address for other readers).
"""

from __future__ import annotations

from pathlib import Path

from shipyard import tls as shared_tls
from shipyard.components.postgres import pgbackrest


def names(settings) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) of the bundle: the CN first, each node's and the repository's
    service name, ``localhost``, each of their hosts' addresses (as DNS names and IPs)."""
    from shipyard import topology  # the store calls issue_bundle: the topology only then

    dns: list[str] = [pgbackrest.CLIENT_CN]
    addresses: list[str] = []
    topo = topology.build(settings)
    for inst in topo.instances_of("postgres"):
        if inst.service.name not in ("postgres", "postgres-replica", pgbackrest.REPO_SERVICE):
            continue
        more_names, more_addresses = shared_tls.instance_names(inst)
        dns += [*more_names, *more_addresses]
        addresses += more_addresses
    return tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(addresses))


def issue_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``pgbackrest_tls``: key, certificate, CA certificate (PEM)."""
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    ca = shared_tls.ensure_ca(repo, env, (pgbackrest.CA_CERT, pgbackrest.CA_KEY), f"shipyard {env} pgbackrest CA",
                              environ)
    issued = shared_tls.server_cert(ca, *names(load_environment(repo, env, environ)))
    return (issued.key_pem + issued.cert_pem + ca.cert_pem).decode()


# The three files of the bundle (templates/secrets/pgbackrest-*.pem.j2).
def key_of(bundle: str) -> str:
    return shared_tls.private_key_of(bundle, pgbackrest.TLS)


def cert_of(bundle: str) -> str:
    """The certificate alone (not the CA's after it): what the server and client present."""
    return shared_tls.certificates_of(bundle, pgbackrest.TLS).split("-----END CERTIFICATE-----")[0] + \
        "-----END CERTIFICATE-----\n"


def ca_of(bundle: str) -> str:
    """The CA's certificate (the bundle's last): the only one each party trusts."""
    certs = shared_tls.certificates_of(bundle, pgbackrest.TLS).strip().split("\n-----BEGIN CERTIFICATE-----")
    last = certs[-1] if len(certs) == 1 else "-----BEGIN CERTIFICATE-----" + certs[-1]
    return last.strip() + "\n"
