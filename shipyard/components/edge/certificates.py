"""The edge's certificate, as the secret ``edge_tls`` of the environment's store: one PEM bundle —
the private key, then the chain the edge serves (server certificate first, then intermediates) —
delivered to the edge as ``/run/secrets/edge.key`` and ``/run/secrets/edge.crt`` (mode 0400,
root: nginx's master reads them before it drops to its workers' user). Never in compose/, the
environment or the deploy's output.

Where the bundle comes from (``edge.tls.mode``):

- ``ca``: issued for ``edge.tls.names`` by the environment's own edge CA (``edge_ca_cert``,
  ``edge_ca_key``: *held* secrets, made once and never delivered to a host, like Vault's CA);
- ``files``: the user's own — the chain file ``edge.tls.chain_file`` of the checkout (what their
  ACME client or corporate CA wrote) and the key, the held secret ``edge_tls_key`` the user puts
  in the store (`make secrets-put ENV=.. NAME=edge_tls_key FILE=..`);
- ``off``: an empty bundle (the secret exists in every environment; nothing reads it).

Every deploy checks the bundle against its source before any host is touched (``preflight``):
a certificate whose names differ from the settings, that its CA did not sign or that expires
within ``RENEW_WITHIN_DAYS``, or a bundle that is not the chain file and key of today, is
replaced — as a rotation (shipyard.secretstore.rotate), which the same deploy applies: the edge
reloads (``nginx -s reload``) rather than being recreated. Otherwise nothing changes (the bundle
and the render stay byte-identical).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shipyard import tls as shared_tls
from shipyard.errors import ShipyardError

CA_CERT, CA_KEY = "edge_ca_cert", "edge_ca_key"
TLS = "edge_tls"  # issued: key + chain, PEM
KEY = "edge_tls_key"  # mode 'files': the user's private key (held; put with `make secrets-put`)
RENEW_WITHIN_DAYS = 30
_CERT_BEGIN, _CERT_END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


def key_of(bundle: str) -> str:
    """The private key block of a bundle (PKCS#8, or the RSA / EC form an ACME client may write)."""
    return shared_tls.private_key_of(bundle, TLS)


def chain_of(bundle: str) -> str:
    """The certificate blocks of a bundle, in order (what nginx's ssl_certificate reads)."""
    return shared_tls.certificates_of(bundle, TLS)


def ensure_ca(repo: Path, settings, environ: dict[str, str] | None = None) -> shared_tls.KeyPair:
    """The environment's edge CA: read from the store, or made once and stored."""
    return shared_tls.ensure_ca(repo, settings.name, (CA_CERT, CA_KEY), f"shipyard {settings.name} edge CA", environ)


def chain_path(repo: Path, settings) -> Path:
    return repo / settings.edge.tls.chain_file


def files_bundle(key_pem: str, chain_pem: str) -> str:
    """The bundle of mode 'files': the user's key, then their chain, as they wrote it (normalised
    to its PEM blocks); refused when the key is not the chain's first certificate's."""
    chain = "\n".join(block for kind, block in shared_tls.pem_blocks(chain_pem) if kind == "CERTIFICATE")
    key = [block for kind, block in shared_tls.pem_blocks(key_pem) if kind.endswith("PRIVATE KEY")]
    if not chain or not key:
        raise ShipyardError(f"secret {KEY} / edge.tls.chain_file", "holds no " + ("certificate" if not chain else "private key"),
                            "the chain file holds PEM certificates (server first); the key is one PEM private key")
    leaf = x509.load_pem_x509_certificate(chain.encode())
    private = serialization.load_pem_private_key(key[0].encode(), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ShipyardError(f"secret {KEY}", "is not the key of the chain file's first certificate",
                            f"put the key that goes with the chain: `make secrets-put ENV=.. NAME={KEY} FILE=privkey.pem`, "
                            f"and check the chain file starts with the server certificate")
    return key[0] + "\n" + chain + "\n"


def issue(repo: Path, settings, environ: dict[str, str] | None = None) -> str:
    """A new ``edge_tls`` value for ``settings`` (module doc)."""
    from shipyard import secretstore  # the store loads the registry: only when issuing

    tls = settings.edge.tls
    if tls.mode == "off":
        return ""
    if tls.mode == "ca":
        ca = ensure_ca(repo, settings, environ)
        server = shared_tls.server_cert(ca, tls.dns_names, tls.addresses)
        return (server.key_pem + server.cert_pem).decode()
    key = secretstore.read_held(repo, settings.name, KEY, environ)
    if key is None:
        raise ShipyardError(f"secrets/{settings.name}/{KEY}.age", "missing, and edge.tls.mode is 'files'",
                            f"put your certificate's private key in the store: "
                            f"`make secrets-put ENV={settings.name} NAME={KEY} FILE=/path/to/privkey.pem`")
    return files_bundle(key.value, chain_path(repo, settings).read_text())


def issue_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """The issuer of ``edge_tls`` (Component.issued_secrets): the store calls it when the secret
    is missing or rotated."""
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    return issue(repo, load_environment(repo, env, environ), environ)


def renewal_reason(repo: Path, settings, bundle: str, now: dt.datetime,
                   environ: dict[str, str] | None = None) -> str | None:
    """Why the stored bundle must be replaced under ``settings`` (None: it is current). Nothing
    secret in the answer."""
    from shipyard import secretstore

    tls = settings.edge.tls
    if tls.mode == "off":
        return None
    if tls.mode == "files":
        key = secretstore.read_held(repo, settings.name, KEY, environ)
        if key is None:
            return None  # issue() says what to do; checkout_problems named it already
        try:
            wanted = files_bundle(key.value, chain_path(repo, settings).read_text())
        except (ShipyardError, ValueError) as err:
            raise ShipyardError(f"edge.tls (mode 'files', environment {settings.name})", str(err),
                                "fix the chain file or the key, then deploy again") from None
        return None if bundle == wanted else "the chain file or the key changed"
    if not bundle.strip():
        return "TLS was off when it was issued"
    try:
        chain = chain_of(bundle).encode()
    except ValueError:
        return "the stored bundle is not a certificate"
    return shared_tls.renewal_reason(chain, ensure_ca(repo, settings, environ).cert_pem, tls.dns_names, tls.addresses, now,
                                     RENEW_WITHIN_DAYS, issuer="the edge CA", names_setting="edge.tls.names")


def renew(repo: Path, settings, now: dt.datetime | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """Replace ``edge_tls`` when ``renewal_reason`` says so, as a rotation the deploy applies
    (Component.preflight): lines to print, nothing secret."""
    from shipyard import secretstore

    if not settings.edge.tls.on:
        return []
    when = now or dt.datetime.now(dt.timezone.utc)
    return secretstore.reissue(repo, settings.name, TLS,
                               lambda bundle: renewal_reason(repo, settings, bundle, when, environ),
                               "this deploy delivers it and reloads the edge", environ)


def preflight(settings, repo: Path) -> list[str]:
    """Before a deploy touches any host (Component.preflight): ``renew``."""
    return renew(repo, settings)


def checkout_problems(settings, repo: Path) -> list[tuple[str, str, str]]:
    """Mode 'files' names a chain file of the checkout and a key in the store: both must be
    there, before anything is touched (the key is not decrypted here: only its file is looked for)."""
    tls = settings.edge.tls
    if tls.mode != "files":
        return []
    found = []
    path = chain_path(repo, settings)
    if not path.is_file():
        found.append(("edge.tls.chain_file", f"{tls.chain_file} is not a file of the checkout",
                      "write your chain there (server certificate first, then intermediates: an ACME client's "
                      "fullchain.pem), or fix the path"))
    elif _CERT_BEGIN not in path.read_text(errors="replace"):
        found.append(("edge.tls.chain_file", f"{tls.chain_file} holds no PEM certificate",
                      "use the PEM chain (-----BEGIN CERTIFICATE-----), server certificate first"))
    if not (repo / "secrets" / settings.name / f"{KEY}.age").exists():
        found.append(("edge.tls.mode", f"is 'files' but secrets/{settings.name}/{KEY}.age (the certificate's key) "
                                       f"does not exist",
                      f"put the key in the store: `make secrets-put ENV={settings.name} NAME={KEY} "
                      f"FILE=/path/to/privkey.pem` (the file stays where it is; only its encrypted copy is kept)"))
    return found
