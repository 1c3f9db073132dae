"""The registry's secrets (docs/registry.md):

- ``registry_ca_cert``, ``registry_ca_key``: the environment's registry CA, *held* (made once on
  the deploying machine, never delivered); each host's engine trusts its certificate
  (client.trust_files);
- ``registry_tls``: the registry's key and certificate (one PEM bundle) for ``registry.names``,
  issued from that CA, delivered as ``/run/secrets/registry.key`` and ``registry.crt``; re-issued
  by a deploy when the names change, another CA signed it or it nears expiry (``preflight``);
- ``registry_password``: the password the engines log in with (user ``USER``); the registry
  gets only its bcrypt hash (``htpasswd_file``), never the value;
- ``registry_http_secret``: distribution's ``http.secret`` (signs the upload state it hands
  clients), read by files/registry/start.sh.

With the registry off, ``registry_tls`` is issued empty and no CA is made (like the edge's with
TLS off); turning it on re-issues it at the next deploy.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from pathlib import Path

import bcrypt

from shipyard import tls as shared_tls

CA_CERT, CA_KEY = "registry_ca_cert", "registry_ca_key"
TLS = "registry_tls"
PASSWORD = "registry_password"
HTTP_SECRET = "registry_http_secret"
USER = "shipyard"  # the one htpasswd user: every host's engine logs in as it
RENEW_WITHIN_DAYS = 30
# The registry checks the password's bcrypt hash on every request of a push or pull. The password
# is 32 random bytes: a higher cost adds nothing its entropy does not give, and costs CPU on each
# request (cost 5 is `htpasswd -B`'s default).
BCRYPT_COST = 5
_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BCRYPT = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def key_of(bundle: str) -> str:
    return shared_tls.private_key_of(bundle, TLS)


def cert_of(bundle: str) -> str:
    return shared_tls.certificates_of(bundle, TLS)


def _salt(password: str) -> bytes:
    """A bcrypt salt derived from the password itself, so the same password always gives the same
    file: a delivered file that changes on every deploy would look like a change each time
    (shipyard/apply/private_files.py compares content). The password is random, so a salt that
    follows it hides nothing a random salt would."""
    digest = hashlib.sha256(f"shipyard-registry-htpasswd:{password}".encode()).digest()[:16]
    encoded = base64.b64encode(digest).rstrip(b"=").translate(bytes.maketrans(_STANDARD, _BCRYPT))
    return b"$2b$%02d$" % BCRYPT_COST + encoded


def htpasswd_file(password: str) -> str:
    """The registry's htpasswd file: ``USER``'s bcrypt hash, the only format distribution accepts."""
    return f"{USER}:{bcrypt.hashpw(password.encode(), _salt(password)).decode()}\n"


def ensure_ca(repo: Path, settings, environ: dict[str, str] | None = None) -> shared_tls.KeyPair:
    """The environment's registry CA: read from the store, or made once and stored."""
    return shared_tls.ensure_ca(repo, settings.name, (CA_CERT, CA_KEY), f"shipyard {settings.name} registry CA", environ)


def issue(repo: Path, settings, environ: dict[str, str] | None = None) -> str:
    """A new ``registry_tls`` value (key, then certificate) for ``registry.names``; empty while off."""
    registry = settings.registry
    if not registry.enabled:
        return ""
    server = shared_tls.server_cert(ensure_ca(repo, settings, environ), registry.dns_names, registry.addresses)
    return (server.key_pem + server.cert_pem).decode()


def issue_bundle(repo: Path, env: str, environ: dict[str, str] | None = None) -> str:
    """The issuer of ``registry_tls`` (Component.issued_secrets)."""
    from shipyard.inventory import load_environment  # the store calls this; settings only now

    return issue(repo, load_environment(repo, env, environ), environ)


def renewal_reason(repo: Path, settings, bundle: str, now: dt.datetime,
                   environ: dict[str, str] | None = None) -> str | None:
    """Why the stored bundle must be issued again under ``settings`` (None: it is current)."""
    registry = settings.registry
    if not registry.enabled:
        return None
    if not bundle.strip():
        return "the registry was off when it was issued"
    try:
        cert = cert_of(bundle).encode()
    except ValueError:
        return "the stored bundle is not a certificate"
    return shared_tls.renewal_reason(cert, ensure_ca(repo, settings, environ).cert_pem, registry.dns_names,
                                     registry.addresses, now, RENEW_WITHIN_DAYS, issuer="the registry CA",
                                     names_setting="registry.names")


def renew(repo: Path, settings, now: dt.datetime | None = None, environ: dict[str, str] | None = None) -> list[str]:
    """Replace ``registry_tls`` when ``renewal_reason`` says so, as a rotation the deploy applies."""
    from shipyard import secretstore

    if not settings.registry.enabled:
        return []
    when = now or dt.datetime.now(dt.timezone.utc)
    return secretstore.reissue(repo, settings.name, TLS,
                               lambda bundle: renewal_reason(repo, settings, bundle, when, environ),
                               "this deploy delivers it and recreates the registry", environ)


def preflight(settings, repo: Path) -> list[str]:
    """Before a deploy touches any host (Component.preflight): ``renew``."""
    return renew(repo, settings)
