"""The private image registry as the rolled-out environment runs it (docs/registry.md): TLS from
the environment's registry CA for each of its names, nothing without its password, and a real
engine's push and pull through it — the image that comes back is the one that went in."""

import io
import os
import secrets
import subprocess
import tarfile

import pytest
import requests

from shipyard import secretstore, topology
from shipyard.components.registry import certificates, client
from shipyard.inventory import load_environment

from .conftest import REPO


@pytest.fixture(scope="module")
def settings(env_name):
    loaded = load_environment(REPO, env_name)
    if not loaded.registry.enabled:
        pytest.skip(f"no registry in {env_name}")
    return loaded


@pytest.fixture(scope="module")
def port(settings):
    registry_host = settings.hosts_with_role("registry")[0]
    return topology.build(settings).published(registry_host, "registry")[1]


@pytest.fixture(scope="module")
def ca_file(settings, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("registry") / "registry-ca.pem"
    path.write_text(secretstore.read_held(REPO, settings.name, certificates.CA_CERT).value)
    return str(path)


def _password(settings) -> str:
    return secretstore.load_or_create(REPO, settings.name, generate_missing=False)[certificates.PASSWORD].value


def test_tls_of_its_ca_for_each_name_and_nothing_without_its_password(settings, port, ca_file):
    ca = ca_file
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the verify given below
    password = _password(settings)
    for name in settings.registry.names:
        url = f"https://{name}:{port}/v2/"
        assert session.get(url, verify=ca, timeout=10).status_code == 401
        assert session.get(url, verify=ca, auth=(certificates.USER, "not-it"), timeout=10).status_code == 401
        assert session.get(url, verify=ca, auth=("someone", password), timeout=10).status_code == 401
        assert session.get(url, verify=ca, auth=(certificates.USER, password), timeout=10).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):  # the system's CAs do not vouch for it
            session.get(url, timeout=10)


def _probe_image(token: str) -> bytes:
    """A one-file image made on the spot (``docker import``): nothing from any other registry."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = f"shipyard registry probe {token}\n".encode()
        entry = tarfile.TarInfo("probe.txt")
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def test_an_image_pushed_by_an_engine_is_pulled_back_the_same(settings, port, ca_file, tmp_path):
    token = secrets.token_hex(4)
    local = f"shipyard/e2e-registry-probe:{token}"
    pushed = client.pushed_ref(settings, local)
    assert pushed == f"{settings.registry.names[0]}:{port}/shipyard/e2e-registry-probe:{token}"
    # A config directory of the test's own: the login never reaches this machine's ~/.docker.
    environ = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker")}

    def docker(*argv: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(["docker", *argv], input=stdin, capture_output=True, env=environ, timeout=120)
        assert done.returncode == 0, (argv, done.stderr.decode(errors="replace"))
        return done.stdout.decode().strip()

    made = docker("import", "-", local, stdin=_probe_image(token))
    try:
        # The engine on this machine reaches a loopback registry without checking its certificate
        # (Docker's default for 127.0.0.0/8); the chain is checked in the test above.
        docker(*client.login_argv(settings)[1:], stdin=_password(settings).encode())
        for argv in client.push_argvs(settings, local):
            docker(*argv[1:])
        docker("image", "rm", local, pushed)
        docker("pull", pushed)
        assert docker("image", "inspect", "--format", "{{.Id}}", pushed) == made
    finally:
        subprocess.run(["docker", "image", "rm", "-f", local, pushed], capture_output=True, env=environ, timeout=60)
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the verify given below
    tags = session.get(f"https://{settings.registry.names[0]}:{port}/v2/shipyard/e2e-registry-probe/tags/list",
                       auth=(certificates.USER, _password(settings)), verify=ca_file, timeout=10).json()
    assert token in tags["tags"]
