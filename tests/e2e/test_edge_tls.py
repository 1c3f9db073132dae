"""TLS at the edge on the rolled-out environment (docs/security.md, "TLS at the edge"): over
HTTPS to the edge's published HTTPS port on loopback, the certificate checked against the
environment's edge CA as the secret store holds it — a task created and read, HSTS and the
security headers (on a 404 too), JSON gzip-compressed when asked, TLS 1.1 refused and 1.2 and 1.3
accepted, the certificate's names; the key and chain are root-only files of the container.

The redirect of plain HTTP (``edge.tls.http: redirect``) is not exercised here: ``ci`` serves
plain HTTP as well (its other tests use it), and the unit tests check the rendered 308.

    make up ENV=ci && .venv/bin/python -m pytest -q tests/e2e/test_edge_tls.py --shipyard-env ci
"""

from __future__ import annotations

import socket
import ssl
import tempfile

import pytest
import requests
from cryptography import x509

from shipyard import secretstore, topology
from shipyard.components.edge import certificates
from shipyard.controller.drills import run_in
from shipyard.inventory import load_environment

from tests.drill_traffic import token_for

from .conftest import REPO

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@pytest.fixture(scope="module")
def settings(env_name):
    settings = load_environment(REPO, env_name)
    if not settings.edge.tls.on:
        pytest.skip("edge.tls.mode is off")
    return settings


@pytest.fixture(scope="module")
def address(settings) -> tuple[str, int]:
    """(bind address, port) the edge publishes HTTPS on, on the first host."""
    bound = topology.build(settings).published_extra(settings.hosts[0], "edge", "edge_https")
    assert bound, f"the edge publishes no HTTPS port in {settings.name}"
    return ("127.0.0.1" if bound[0] == "0.0.0.0" else bound[0]), bound[1]


@pytest.fixture(scope="module")
def ca_file(settings):
    """The edge CA's certificate (mode 'ca'), read from the store as the Vault tests read theirs."""
    if settings.edge.tls.mode != "ca":
        pytest.skip("edge.tls.mode is not 'ca': the chain's issuer is the user's")
    ca = secretstore.read_held(REPO, settings.name, certificates.CA_CERT)
    assert ca is not None, f"no {certificates.CA_CERT} in secrets/{settings.name}/"
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as handle:
        handle.write(ca.value)
        handle.flush()
        yield handle.name


@pytest.fixture(scope="module")
def name(settings) -> str:
    return settings.edge.tls.names[0]


@pytest.fixture(scope="module")
def client(settings, address, ca_file, name) -> requests.Session:
    """A session to https://<the certificate's first name>:<port>/, which must resolve to the
    published address (``localhost`` in ci and local), verifying against the edge CA."""
    resolved = {info[4][0] for info in socket.getaddrinfo(name, address[1], proto=socket.IPPROTO_TCP)}
    if address[0] not in resolved:
        pytest.skip(f"{name} does not resolve to {address[0]} here")
    session = requests.Session()
    # Not the environment's settings: requests lets REQUESTS_CA_BUNDLE (set on these machines)
    # override a session's own ``verify``, and this client must trust the edge CA alone.
    session.trust_env = False
    session.verify = ca_file
    session.headers["Authorization"] = "Bearer " + token_for(settings, "edge-tls")
    session.base = f"https://{name}:{address[1]}"
    return session


def test_a_task_is_created_and_read_over_https(client):
    created = client.post(f"{client.base}/v1/tasks", json={"kind": "checksum", "payload": {"n": 3}}, timeout=10)
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    read = client.get(f"{client.base}/v1/tasks/{task_id}", timeout=10)
    assert read.status_code == 200 and read.json()["id"] == task_id


@pytest.mark.parametrize("path, status", [("/v1/tasks", 200), ("/metrics", 404), ("/no/such/path", 404)])
def test_hsts_and_the_security_headers_are_on_every_answer(client, settings, path, status):
    answer = client.get(f"{client.base}{path}", timeout=10)
    assert answer.status_code == status
    assert answer.headers.get("Strict-Transport-Security") == f"max-age={settings.edge.tls.hsts_max_age_s}"
    for header, value in SECURITY_HEADERS.items():
        assert answer.headers.get(header) == value, header
    assert answer.headers.get("Content-Security-Policy", "").startswith("default-src 'none'")


def test_the_docs_page_gets_a_policy_that_lets_swagger_ui_run(client):
    answer = client.get(f"{client.base}/docs", timeout=10)
    assert answer.status_code == 200
    assert "script-src 'self' 'unsafe-inline'" in answer.headers["Content-Security-Policy"]


def test_json_is_gzip_compressed_when_asked_and_large_enough(client):
    # The OpenAPI document: JSON, public and many kilobytes.
    asked = client.get(f"{client.base}/openapi.json", headers={"Accept-Encoding": "gzip"}, timeout=10, stream=True)
    raw = asked.raw.read(decode_content=False)
    assert asked.status_code == 200 and asked.headers["Content-Type"].startswith("application/json")
    assert asked.headers.get("Content-Encoding") == "gzip" and "Accept-Encoding" in asked.headers.get("Vary", "")
    plain = client.get(f"{client.base}/openapi.json", headers={"Accept-Encoding": "identity"}, timeout=10)
    assert "Content-Encoding" not in plain.headers
    assert len(raw) < len(plain.content) / 2


def _handshake(address, ca_file, name, version: ssl.TLSVersion) -> str:
    """The protocol a handshake offering only ``version`` agrees (raises ssl.SSLError if refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(ca_file)
    if version < ssl.TLSVersion.TLSv1_2:
        # OpenSSL 3 offers TLS 1.1 only at security level 0: let this client offer it, so that
        # the refusal is the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        return tls.version()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_accepted(address, ca_file, name, version):
    assert _handshake(address, ca_file, name, version) == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]


def test_tls_1_1_is_refused_by_the_server(address, ca_file, name):
    with pytest.raises(ssl.SSLError) as err:
        _handshake(address, ca_file, name, ssl.TLSVersion.TLSv1_1)
    if "NO_PROTOCOLS_AVAILABLE" in str(err.value) or "NO_CIPHERS_AVAILABLE" in str(err.value):
        pytest.skip(f"this machine's OpenSSL does not offer TLS 1.1 at all ({err.value}): not tested")
    # The server's protocol_version alert: it saw a TLS 1.1 ClientHello and refused it.
    assert "PROTOCOL_VERSION" in str(err.value).upper() or "UNSUPPORTED_PROTOCOL" in str(err.value).upper(), err.value


def test_the_certificate_names_the_configured_names(settings, address, ca_file, name):
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(settings.edge.tls.names)


def test_the_key_and_chain_are_root_only_files_and_nowhere_else(settings):
    for target in ("edge.key", "edge.crt"):
        code, out, err = run_in(settings, "edge", ["stat", "-c", "%a %u", f"/run/secrets/{target}"])
        assert code == 0 and out.strip() == "400 0", (target, out, err)
    code, out, _ = run_in(settings, "edge", ["env"])
    assert code == 0 and "PRIVATE KEY" not in out and "CERTIFICATE" not in out
