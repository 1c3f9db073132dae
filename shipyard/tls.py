"""An environment's own certificate authorities and the certificates they issue (PEM), with
``cryptography``: for servers whose peers and clients trust only their environment's CA (Vault's
raft, Elasticsearch's transport layer, the edge, the image registry). Pure values in, PEM out;
``ensure_ca`` keeps a CA as two *held* secrets of the environment's store (made once, never
delivered to a host); ``renewal_reason`` says when an issued certificate no longer fits.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shipyard.errors import ShipyardError


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return "KeyPair(cert, key=***)"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_ca(common_name: str, days: int = 3650) -> KeyPair:
    """A self-signed CA that signs server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def server_cert(ca: KeyPair, names: tuple[str, ...], addresses: tuple[str, ...], days: int = 397) -> KeyPair:
    """A server (and peer: client auth too) certificate for ``names`` and IP ``addresses``."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else addresses[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5)).not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IP address (a certificate holds it as an IP SAN, not a DNS name)."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def instance_names(instance) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(DNS names, IP addresses) the certificate of a topology instance must hold: its service name
    (its peers on one host), ``localhost`` and loopback (a published port, a health probe) and its
    host's address (peers and clients on other hosts)."""
    names = (instance.name, "localhost")
    addresses = ["127.0.0.1"]
    try:
        ipaddress.ip_address(instance.host.address)
        addresses.append(instance.host.address)
    except ValueError:
        names += (instance.host.address,)
    return names, tuple(dict.fromkeys(addresses))


def ensure_ca(repo: Path, env: str, held: tuple[str, str], common_name: str,
              environ: dict[str, str] | None = None) -> KeyPair:
    """The CA kept as the held secrets ``held`` (certificate, key) of ``env``: read from the
    store, or made once and stored."""
    from shipyard import secretstore  # the store loads the registry: only when a CA is needed

    cert_name, key_name = held
    cert, key = (secretstore.read_held(repo, env, n, environ) for n in held)
    if cert and key:
        return KeyPair(cert.value.encode(), key.value.encode())
    if cert or key:
        raise ShipyardError(f"secrets/{env}/{key_name if cert else cert_name}.age", "missing while the other half of the CA exists",
                            "restore it from git; a new CA would orphan every certificate it signed")
    ca = new_ca(common_name)
    secretstore.write_held(repo, env, cert_name, ca.cert_pem.decode(), environ)
    secretstore.write_held(repo, env, key_name, ca.key_pem.decode(), environ)
    return ca


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(type, block with its BEGIN and END lines) of each PEM block in ``text``, in order."""
    found = []
    for part in text.split("-----BEGIN ")[1:]:
        kind, _, rest = part.partition("-----")
        end = f"-----END {kind}-----"
        if end in rest:
            found.append((kind, f"-----BEGIN {kind}-----{rest.split(end, 1)[0]}{end}"))
    return found


def private_key_of(bundle: str, secret: str) -> str:
    """The private key block of a bundle held as the secret ``secret`` (PKCS#8, or the RSA / EC
    form an ACME client may write)."""
    keys = [block for kind, block in pem_blocks(bundle) if kind.endswith("PRIVATE KEY")]
    if not keys:
        raise ValueError(f"the {secret} bundle holds no private key: issue it again with "
                         f"`make secrets-rotate NAME={secret}`")
    return keys[0] + "\n"


def certificates_of(bundle: str, secret: str) -> str:
    """The certificate blocks of a bundle held as the secret ``secret``, in order (a server's
    chain: its own certificate first)."""
    certs = [block for kind, block in pem_blocks(bundle) if kind == "CERTIFICATE"]
    if not certs:
        raise ValueError(f"the {secret} bundle holds no certificate: issue it again with "
                         f"`make secrets-rotate NAME={secret}`")
    return "\n".join(certs) + "\n"


def _names_text(names: list[str], addresses: list[str]) -> str:
    return ", ".join(names + [f"IP {a}" for a in addresses])


def renewal_reason(cert_pem: bytes, ca_cert_pem: bytes, names: tuple[str, ...], addresses: tuple[str, ...],
                   now: dt.datetime, renew_within_days: int, issuer: str = "the CA",
                   names_setting: str = "the names asked for") -> str | None:
    """Why a certificate ``ca_cert_pem``'s CA issued for ``names`` and IP ``addresses`` must be
    issued again (None: it still fits): another CA signed it, its names differ, or it expires within
    ``renew_within_days``. ``issuer`` and ``names_setting`` (the key the names come from) name them in
the answer; nothing secret is in it."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "the stored bundle is not a certificate"
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert_pem))
    except (InvalidSignature, ValueError, TypeError):  # another CA's (or a user's chain)
        return f"{issuer} did not issue it"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    # DNS names and IP addresses apart: an address held as a DNS name matches no client.
    have = (sorted(sans.get_values_for_type(x509.DNSName)), sorted(str(a) for a in sans.get_values_for_type(x509.IPAddress)))
    wanted = (sorted(names), sorted(str(ipaddress.ip_address(a)) for a in addresses))
    if have != wanted:
        return f"its names ({_names_text(*have)}) are not {names_setting} ({_names_text(*wanted)})"
    left = cert.not_valid_after_utc - now
    if left < dt.timedelta(days=renew_within_days):
        return f"it expires in {max(left.days, 0)} days (renewed within {renew_within_days})"
    return None
