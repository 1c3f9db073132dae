"""The image registry: published on its host's address only (its debug server nowhere), serving
over TLS the certificate the deploy delivered, and asking for credentials before anything else.
Its CA and password live on the deploying machine: tests/e2e/test_registry.py checks the chain
against the CA and a push and pull with the password."""

import ssl

import pytest
import requests
from cryptography import x509


@pytest.fixture(scope="module")
def registry(target):
    if not target.runs("registry"):
        pytest.skip("no registry on this host")
    from shipyard import topology

    return topology.build(target.settings).published(target.rendered.host, "registry")


def test_published_on_its_hosts_address_only(target, registry):
    bind, port = registry
    container = target.container_of("registry")
    bindings = [b for ports in (container["NetworkSettings"]["Ports"] or {}).values() for b in (ports or [])]
    assert [f"{b['HostIp']}:{b['HostPort']}" for b in bindings] == [f"{bind}:{port}"]  # not the debug server's


def test_serves_the_delivered_certificate(target, registry):
    bind, port = registry
    served = x509.load_pem_x509_certificate(ssl.get_server_certificate((bind, port)).encode())
    delivered = target.host.file(f"{target.project_dir}/secrets/registry/registry.crt").content
    assert served == x509.load_pem_x509_certificate(delivered)


def test_asks_for_credentials(registry):
    bind, port = registry
    # The chain is checked against the CA in tests/e2e/test_registry.py; here, what it answers.
    answer = requests.get(f"https://{bind}:{port}/v2/", verify=False, timeout=10)  # noqa: S501
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic realm="), answer.headers
