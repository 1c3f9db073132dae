"""pgBackRest's TLS once the nodes span hosts (pgbackrest.py, "a repository server").

``pgbackrest_ca_cert``, ``pgbackrest_ca_key``: the environment's pgBackRest CA, *held* (made once
on the deploying machine, never delivered). ``pgbackrest_tls``: one bundle — key, certificate,
CA certificate — issued from it when missing, delivered to every node and to the repository's
server as three files (``/run/secrets/pgbackrest.{key,crt}``, ``pgbackrest-ca.crt``); re-issued by
a deploy before any host is touched when the names it must hold changed (a data host added or
readdressed), another CA signed it or it nears expiry (``preflight``), or by ``make secrets-rotate
NAME=pgbackrest_tls``. One certificate for every party: its CN is the name
each server authorises for the stanza (``tls-server-auth``), and its names are every server's as
the others reach it. pgBackRest 2.45 matches a server against the certificate's DNS names and CN
only, so each host address is in it as a DNS name too (and as an IP address for other readers).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from shipyard import tls as shared_tls
from shipyard.components.postgres import pgbackrest

RENEW_WITHIN_DAYS = 30


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


def _ca(repo: Path, env: str, environ: dict[str, str] | None) -> shared_tls.KeyPair:
    """The environment's pgBackRest CA: read from the store, or made once and stored."""
    return shared_tls.ensure_ca(repo, env, (pgbackrest.CA_CERT, pgbackrest.CA_KEY), f"shipyard {env} pgbackrest CA",
                                environ)


def issue_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """A new ``pgbackrest_tls``: key, certificate, CA certificate (PEM)."""
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    ca = _ca(repo, env, environ)
    issued = shared_tls.server_cert(ca, *names(load_environment(repo, env, environ)))
    return (issued.key_pem + issued.cert_pem + ca.cert_pem).decode()


def renewal_reason(repo: Path, settings, bundle: str, now: dt.datetime,
                   environ: dict[str, str] | None = None) -> str | None:
    """Why the stored bundle must be issued again under ``settings`` (None: it is current, or the
    nodes share one host and it is not used)."""
    if not pgbackrest.spans_hosts(settings):
        return None
    try:
        cert = cert_of(bundle).encode()
    except ValueError:
        return "the stored bundle is not a certificate"
    return shared_tls.renewal_reason(cert, _ca(repo, settings.name, environ).cert_pem, *names(settings), now, RENEW_WITHIN_DAYS,
                                     issuer="the pgBackRest CA", names_setting="the PostgreSQL nodes' names and hosts")


def renew(repo: Path, settings, now: dt.datetime | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """``pgbackrest_tls`` re-issued when ``renewal_reason`` says so, as a rotation the deploy
    applies. Lines to print, nothing secret."""
    from shipyard import secretstore

    if not pgbackrest.spans_hosts(settings):
        return []
    when = now or dt.datetime.now(dt.timezone.utc)
    return secretstore.reissue(repo, settings.name, pgbackrest.TLS,
                               lambda bundle: renewal_reason(repo, settings, bundle, when, environ),
                               "this deploy delivers it and recreates the nodes and the repository's server", environ)


def preflight(settings, repo: Path) -> list[str]:
    """Before a deploy touches any host (Component.preflight): ``renew``."""
    return renew(repo, settings)


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
